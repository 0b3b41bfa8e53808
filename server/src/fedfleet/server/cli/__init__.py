"""Server-side commands, one module per command group. Parsing only.

Each module parses its options and delegates: the server's lifecycle to
:mod:`fedfleet.server.host.lifecycle`, runs to :mod:`fedfleet.server.host.control` and
:mod:`fedfleet.server.host.follower`, certificates and secrets to their modules.
"""
