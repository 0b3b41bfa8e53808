"""The warm trainer's release of start-up code pages: what it picks and that it is safe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedfleet.client.memory import clean_file_mappings

SMAPS = """\
7f0000000000-7f0000001000 r--p 00000000 fe:01 1 /usr/lib/libtf.so
Rss:                   4 kB
Anonymous:             0 kB
7f0000001000-7f0000003000 r-xp 00001000 fe:01 1 /usr/lib/libtf.so
Rss:                   8 kB
Anonymous:             0 kB
7f0000003000-7f0000004000 r--p 00003000 fe:01 1 /usr/lib/libtf.so
Rss:                   4 kB
Anonymous:             4 kB
7f0000004000-7f0000005000 rw-p 00004000 fe:01 1 /usr/lib/libtf.so
Anonymous:             0 kB
7f0000005000-7f0000006000 r--p 00000000 00:00 0
Anonymous:             0 kB
7f0000006000-7f0000007000 r--s 00000000 fe:01 2 /dev/shm/x
Anonymous:             0 kB
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
"""


def test_only_read_only_file_mappings_without_private_pages_are_picked() -> None:
    """Relocated read-only data, writable, anonymous, shared and special maps are kept."""
    assert clean_file_mappings(SMAPS) == [(0x7F0000000000, 0x7F0000001000),
                                          (0x7F0000001000, 0x7F0000003000)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise")
def test_released_pages_come_back_and_numpy_still_computes() -> None:
    """After the release the process keeps working and holds less memory."""
    script = (
        "import numpy as np\n"
        "from fedfleet.client.memory import release_startup_pages, resident_mb\n"
        "a = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)\n"
        "before = float(np.linalg.norm(a @ a.T))\n"
        "freed = release_startup_pages()\n"
        "after = float(np.linalg.norm(a @ a.T))\n"
        "print(freed, before == after)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    freed, same = done.stdout.split()
    assert float(freed) > 0 and same == "True"
