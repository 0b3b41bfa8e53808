"""The engine: bring one device to the state its inventory entry describes.

It works through any ``docker.DockerClient`` (how the client reaches the device is
the channels' business), in idempotent steps, each in its own module:

1. check the daemon: reachable, Linux, architecture, memory (:mod:`.checks`);
2. the client image: already there (same image ID), or pulled, streamed or built,
   with free disk checked before a stream (:mod:`.transfer`);
3. the node key, made on the device in a one-shot container of the client image,
   into the device's key volume; only the public key is read back. ``ca.crt`` and the
   node ID go into the same volume (:mod:`.keys`);
4. the key registered with the server (:mod:`.keys`, :mod:`.registry`);
5. the client container: created from the image *ID*, key volume and data read-only,
   limits, restart policy, healthcheck and labels (device, version, inventory hash)
   (:mod:`.container`), switched in or rolled back (:mod:`.switch`).

A device whose container carries the same inventory hash, runs, and is registered is
left alone. A container that must change is switched only while the device is idle
(``activity.json`` of ``fedfleet join``), and the new one must become healthy and
online on the server within a bounded time, or the old one is put back.
"""

from __future__ import annotations

import time
from typing import Any

from fedfleet.server.fleet import container as desired
from fedfleet.server.fleet.checks import check
from fedfleet.server.fleet.common import Device, Outcome, control_error, short_id
from fedfleet.server.fleet.keys import Setup, setup
from fedfleet.server.fleet.nodes import node_state
from fedfleet.server.fleet.switch import switch
from fedfleet.server.fleet.transfer import ensure_image
from fedfleet.shared.errors import FedfleetError


class DeviceEngine(Device):
    """Brings the device ``spec`` to its desired state through ``client``."""

    def apply(self) -> Outcome:
        """Bring the device to its desired state (deploy and update share this).

        Raises
        ------
        DeviceError
            With the reason; a container that failed its gate was replaced by the old one.
        """
        started = time.monotonic()
        facts = check(self)  # 1. the daemon
        image_id = ensure_image(self, facts)  # 2. the image
        digest = self.inventory_hash(image_id)
        current = self.current()
        status = self._up_to_date(current, digest) if current is not None else None
        if status is not None:
            return Outcome(self.spec.name, True, False,
                           f"up to date: {self.spec.image} ({short_id(image_id)}), node "
                           f"{current.labels.get(desired.NODE_LABEL)} {status}; nothing "
                           "changed", time.monotonic() - started)
        found = setup(self, image_id)  # 3.-4. the key, registered
        old = current.image.id if current is not None else None
        config = self.container_config(image_id, found, digest)  # 5. the container
        switch(self, current, config, found.node_id)
        verb = "deployed" if old is None else "updated" if old != image_id else "reconfigured"
        change = f" (was {short_id(old)})" if old is not None and old != image_id else ""
        return Outcome(self.spec.name, True, True,
                       f"{verb}: {self.spec.image} ({short_id(image_id)}){change}, healthy "
                       f"and online as node {found.node_id}", time.monotonic() - started,
                       {"node_id": found.node_id, "image_id": image_id})

    def inventory_hash(self, image_id: str) -> str:
        """Hash what the inventory asks of this device, with the image ID and the CA."""
        return desired.inventory_hash(self.spec, self.fleet.server.address, self.fleet.ca_pem,
                                      image_id)

    def container_config(self, image_id: str, found: Setup, digest: str) -> dict[str, Any]:
        """Return ``containers.create`` arguments for the client container."""
        return desired.container_config(self.spec, self.fleet.server.address, image_id,
                                        found, digest)

    def _up_to_date(self, container: Any, digest: str) -> str | None:
        """Return the node's status if ``container`` needs no change, else None."""
        if container.labels.get(desired.HASH_LABEL) != digest or container.status != "running":
            return None
        node_id = desired.node_label(container.labels)
        if node_id is None:
            return None
        try:
            state = node_state(self.fleet.registry, node_id)
        except FedfleetError as err:
            raise control_error(err) from None
        if state.revoked:
            raise self.revoked(node_id)
        return state.status
