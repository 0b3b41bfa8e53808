"""``fedfleet simulate``: fedfleet's apps on Flower's simulation engine (Ray).

fedfleet's own ServerApp and ClientApp with virtual devices. Simulation-only code,
never run on a device:

- :mod:`~fedfleet.server.simulation.plan`: the simulation's plan (which data each
  virtual device holds, which devices are online in which round), carried to the
  apps in the run config;
- :mod:`~fedfleet.server.simulation.availability`: offline devices are not sampled
  (a grid that filters ``get_node_ids``);
- :mod:`~fedfleet.server.simulation.server_app`: the ServerApp entry, fedfleet's
  ServerApp on that grid;
- :mod:`~fedfleet.server.simulation.client_app`: the ClientApp entry, which maps a
  virtual node's ``partition-id`` to fedfleet's node data and calls fedfleet's
  ClientApp handlers (the one module here that imports ``fedfleet.client``, which the
  ``[simulation]`` extra installs);
- :mod:`~fedfleet.server.simulation.runner`: a simulation SuperLink, the run
  submitted and followed like ``fedfleet run``.
"""
