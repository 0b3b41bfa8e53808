"""Deploy, watch and update the clients on edge devices through their Docker Engine API.

``inventory`` reads fleet.toml into ``specs``; ``channels`` turn an endpoint into a
``docker.DockerClient``; ``engine`` brings one device to its entry through any client,
one step per module (``checks``, ``transfer``, ``keys``, ``container``, ``switch``);
``rollout``, ``status`` and ``removal`` are the other commands' work; ``nodes`` is the
server's view of the devices, ``parallel`` the one runner of per-device jobs; the
commands are :mod:`fedfleet.server.cli.fleet` (see docs/architecture.md, Fleet).
"""
