"""Run the fedfleet CLI as a device that has neither TensorFlow nor Flower installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def no_tensorflow_cli(*args: str, cwd: Path, block: str = "tensorflow,keras,flwr"
                       ) -> subprocess.CompletedProcess[str]:
    """Run the fedfleet CLI with TensorFlow, Keras and Flower made impossible to import."""
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(block.split(','))!r}:\n"
        "            raise ImportError(f'{name} is not installed on this device')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fedfleet.shared.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:], prog_name='fedfleet')\n"
        "finally:\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                   ('tensorflow', 'keras', 'flwr'))\n"
        "    print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "FLWR_HOME": str(cwd)})
