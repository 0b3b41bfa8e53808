"""One swarm process: many virtual devices on one asyncio loop.

    python -m swarm.runner SPEC.json     (from benchmarks/, as swarm.launch does)

SPEC.json (written by :mod:`swarm.launch`) names the gateway, the CA, each device's
key file, source address and pace, how long to live and where to write the result.
Each device has its own HTTP client (its own TLS connections, kept alive like a
SuperNode's) bound to its source address, so per-address limits at the gateway see
the fleet as it would be in the field. Devices start spread over ``ramp_s`` seconds,
like a fleet coming online, not all in the same millisecond.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from swarm.device import DeviceLog, Pace, VirtualDevice
from swarm.fleetapi import Deadline, FleetClient, Stats


def _load_key(path: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an ECDSA key")
    return key


async def run_group(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the devices of ``spec`` until its duration is over; return what they did."""
    context = ssl.create_default_context(cafile=spec["ca_file"])
    stats = Stats()
    started = time.monotonic()
    stop = Deadline(started + float(spec["duration_s"]))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop early, and still report
        loop.add_signal_handler(sig, lambda: setattr(stop, "at", time.monotonic()))
    devices: list[VirtualDevice] = []
    clients: list[httpx.AsyncClient] = []
    for index, (key, source, pace) in enumerate(zip(spec["keys"], spec["sources"],
                                                    spec["paces"], strict=True)):
        transport = httpx.AsyncHTTPTransport(verify=context, local_address=source,
                                             retries=0)
        http = httpx.AsyncClient(transport=transport, timeout=30.0, limits=httpx.Limits(
            max_connections=4, max_keepalive_connections=2, keepalive_expiry=25.0))
        clients.append(http)
        device = VirtualDevice(FleetClient(http, spec["base_url"], _load_key(key), stats),
                               Pace(**pace), seed=int(spec.get("seed", 0)) + index)
        device.log.key = Path(key).name
        devices.append(device)
    ramp = float(spec.get("ramp_s", 0.0))

    async def live(i: int, device: VirtualDevice) -> DeviceLog:
        await asyncio.sleep(ramp * i / max(1, len(devices)))
        try:
            return await device.run(started, stop)
        except Exception as err:  # one device's end is data, not a crash
            device.log.errors.append(f"ended: {type(err).__name__}: {err}"[:300])
            return device.log

    cpu0 = time.process_time()
    logs = await asyncio.gather(*(live(i, d) for i, d in enumerate(devices)))
    cpu_s = time.process_time() - cpu0
    for http in clients:
        await http.aclose()
    return {"devices": [asdict(log) for log in logs], "latencies": stats.latencies,
            "statuses": stats.statuses, "transport_errors": stats.transport_errors,
            "retries": stats.retries, "cpu_s": cpu_s,
            "wall_s": time.monotonic() - started, "max_rss_kb": _max_rss_kb()}


def _max_rss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv: list[str]) -> int:
    """Run the spec file ``argv[1]``; write the result next to it as the spec says."""
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if spec.get("cpus"):
        os.sched_setaffinity(0, set(spec["cpus"]))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run_group(spec))
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
