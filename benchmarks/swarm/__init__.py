"""A device swarm: many virtual devices speaking Flower 1.42's Fleet API to a real server.

- :mod:`swarm.fleetapi`: one device's signed Fleet API calls (as a SuperNode makes them);
- :mod:`swarm.device`: one device's life: activate, heartbeat, poll, pull, reply, push;
- :mod:`swarm.runner`: one process holding many devices on an asyncio loop;
- :mod:`swarm.launch`: keys, source addresses, processes, and the merged result;
- :mod:`swarm.stack`: ``fedfleet server`` behind the fedfleet gateway on this host;
- :mod:`swarm.procs`: CPU and memory of the server's processes, by role.

``benchmarks/scale.py`` uses all of it to measure a server at fleet size.
"""
