"""Deploy, watch and update the clients on edge devices through their Docker Engine API.

``inventory`` reads fleet.toml; ``channels`` turn an endpoint into a
``docker.DockerClient``; ``engine`` brings one device to its desired state through any
client; ``registry`` reaches the server's Control API; ``cli`` is ``fedfleet fleet``.
"""
