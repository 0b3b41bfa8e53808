"""Running Flower's daemons as child processes, and waiting for a SuperLink to answer."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.tether import tethered

QUIET_FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONUNBUFFERED": "1",
}


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MB (Linux ``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_started_at() -> float | None:
    """Return when this process started (Unix time), from /proc; None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a Flower process with its own ``FLWR_HOME``.

    This Python's script directory goes first on PATH: Flower daemons start their
    helpers (``flower-superexec``, ``flwr-serverapp``) by name.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {**os.environ, **QUIET_FLOWER_ENV, "FLWR_HOME": str(flwr_home),
           "PATH": f"{scripts}{os.pathsep}{path}" if path else scripts}
    env.update(extra or {})
    return env


def flower_executable(name: str) -> str:
    """Find a Flower console script next to this Python, or on PATH.

    Raises
    ------
    FedfleetError
        If it is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FedfleetError(f"{name} not found: install flwr==1.42.0 in this environment")
    return found


def health_url(address: str, tls: bool) -> str:
    """Return the SuperLink health URL for ``host:port``."""
    return f"{'https' if tls else 'http'}://{address}/health"


def probe(address: str, tls: bool, ca_file: Path | None, timeout: float = 3.0) -> str | None:
    """Ask the SuperLink's ``/health`` once; return None when healthy, else the reason.

    Raises
    ------
    FedfleetError
        When retrying cannot help: the certificate does not verify.
    """
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(health_url(address, tls), timeout=timeout,
                                    context=context) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        if not tls and err.code == 400 and b"HTTPS port" in err.read(300):
            raise FedfleetError(f"the server at {address} requires TLS (plain HTTP was "
                                "sent to its HTTPS port): use --root-certificates, not "
                                "--insecure") from None
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = ("the address must be one of the certificate's names (fedfleet certs "
                    "--host)" if "mismatch" in str(reason.verify_message) else
                    "give the CA that signed the server's certificate with "
                    "--root-certificates")
            raise FedfleetError(f"the server at {address} failed TLS verification "
                                f"({reason.verify_message}): {hint}") from None
        text = str(reason)
        if not tls and ("Remote end closed" in text or "reset" in text.lower()):
            text += "; the server may require TLS: use --root-certificates, not --insecure"
        if tls and "WRONG_VERSION_NUMBER" in text:
            text += "; the server speaks plain HTTP: it was started with --insecure"
        return text


def wait_healthy(
    address: str, tls: bool, ca_file: Path | None, timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until the SuperLink at ``address`` is healthy.

    Raises
    ------
    FedfleetError
        After ``timeout`` seconds, or when ``process`` (a local SuperLink) exits.
    """
    deadline = time.monotonic() + timeout
    reason: str | None = "not tried"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise FedfleetError(
                f"the SuperLink exited with code {process.returncode} before it was "
                "ready; see its log"
            )
        reason = probe(address, tls, ca_file)
        if reason is None:
            return
        time.sleep(0.5)
    raise FedfleetError(
        f"no fedfleet server answers at {address} after {timeout:.0f}s ({reason}); "
        "check the address, that the server runs, and that port is reachable"
    )


def start(cmd: Sequence[str], env: Mapping[str, str], log_file: Path | None = None
          ) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, its output to ``log_file`` or ours.

    It gets SIGTERM if this process dies, even by SIGKILL (see :mod:`tether`).
    """
    out = log_file.open("ab") if log_file is not None else None
    try:
        return subprocess.Popen(tethered(cmd), env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
    finally:
        if out is not None:
            out.close()


def stop(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop a process started by :func:`start` and everything it spawned."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # children that outlived the leader (SuperExec, app processes)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
