"""Running `docker compose` for the docker tests: one project per test, from the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def compose(project: str, env: dict[str, str], *args: str, timeout: float = 1200
            ) -> subprocess.CompletedProcess[str]:
    """Run ``docker compose -p PROJECT ARGS`` in the repository with ``env`` added."""
    return subprocess.run(["docker", "compose", "-p", project, *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def docker_problem() -> str | None:
    """Return why Docker with the Compose plugin cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    for cmd in (["docker", "info"], ["docker", "compose", "version"]):
        if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
            return f"'{' '.join(cmd)}' failed"
    return None
