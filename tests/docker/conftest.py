"""Fixtures of the docker tests: a working engine, and the images built once."""

from __future__ import annotations

import os

import pytest
from dockerkit import compose, docker_problem


@pytest.fixture(scope="session")
def docker_ok() -> None:
    """Skip (or fail under CI) without a working Docker engine and Compose plugin."""
    problem = docker_problem()
    if problem and os.environ.get("FEDFLEET_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker required but {problem}; run dev/setup.sh")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def images(docker_ok: None) -> None:
    """Build the images exactly as `docker compose up --build` would, once per session."""
    done = compose("fedfleet-build", {}, "build", timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
