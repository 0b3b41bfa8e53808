"""The run: what the ServerApp does in its own process, from the first model to the last.

Its steps are in docs/architecture.md; :mod:`.server_app` is where a run starts.
"""
