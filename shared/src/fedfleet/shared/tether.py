"""Run a command that is stopped when the process that started it dies.

``python -m fedfleet.shared.tether SIGNAL PARENT_PID -- CMD...`` asks Linux to send
SIGNAL to CMD when its parent exits (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``), then
replaces itself with CMD. So a SuperNode or trainer started by ``fedfleet join``
does not outlive a ``join`` that was killed with SIGKILL. Elsewhere it just runs CMD.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def tethered(cmd: Sequence[str], sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """Return ``cmd`` wrapped so that it receives ``sig`` when our process dies."""
    return [sys.executable, "-m", "fedfleet.shared.tether", str(int(sig)),
            str(os.getpid()), "--", *cmd]


def main(argv: Sequence[str]) -> None:
    """Arm the parent-death signal, then exec the command."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: python -m fedfleet.shared.tether SIGNAL PARENT_PID -- CMD [ARG...]")
    sig, parent, cmd = int(argv[0]), int(argv[1]), list(argv[3:])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
