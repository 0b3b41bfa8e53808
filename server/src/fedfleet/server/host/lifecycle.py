"""``fedfleet server`` from start to stop.

Start the SuperLink, register the authorized device keys, mark the server ready (for
healthchecks; meanwhile ``status.json`` in the state dir says which phase it is in),
then submit the run (or the continuation of a run a crash interrupted) and follow it,
and keep serving until stopped. The SuperLink is stopped on every way out: Ctrl-C,
SIGTERM (``docker stop``), an error.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedfleet.server.host.authorized_keys import register_authorized_keys
from fedfleet.server.host.control import Control, Simulation
from fedfleet.server.host.follower import RunFollower
from fedfleet.server.host.live import LiveView
from fedfleet.server.host.superlink import ServerOptions, start_superlink
from fedfleet.server.run.resume import continuation, find_interrupted
from fedfleet.shared import process
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.runrecord import summary
from fedfleet.shared.serverstatus import STATUS_FILE, read_status, write_status
from fedfleet.shared.settings import RunSettings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ServePlan:
    """What ``fedfleet server`` was asked to do."""

    options: ServerOptions
    settings: RunSettings
    output_dir: Path
    authorized_keys: Path | None = None
    start_run: bool = True
    resume: bool = True
    exit_when_done: bool = False
    live: bool = False
    """Show the run live (a terminal) instead of a line per round."""


def serve(plan: ServePlan, echo: Echo) -> None:
    """Run the server until stopped, or until the run is done with ``exit_when_done``.

    Raises
    ------
    FedfleetError
        If the SuperLink does not start or exits, a key cannot be registered, or
        the run fails.
    """
    state_dir = plan.options.state_dir
    # `docker stop`, systemd and process managers send SIGTERM: leave via `finally` so
    # the SuperLink (its own process group) is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ready = state_dir / "ready"  # for healthchecks: the server is up and keys registered
    ready.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_status(state_dir, "starting", "starting the SuperLink")
    try:
        superlink = start_superlink(plan.options)
    except BaseException as err:
        write_status(state_dir, "failed", f"the SuperLink did not start: {err}"
                     if isinstance(err, FedfleetError) else "stopped while starting")
        raise
    try:
        if plan.authorized_keys is not None:
            register_authorized_keys(plan.options.control(), plan.authorized_keys,
                                     state_dir, echo=echo,
                                     progress=_progress_writer(state_dir))
        ready.touch()
        write_status(state_dir, "ready", "ready")
        if plan.start_run:
            settings = plan.settings
            interrupted = find_interrupted(plan.output_dir) if plan.resume else None
            if interrupted is not None:
                echo(f"Run {interrupted.run_id} was interrupted after round "
                     f"{interrupted.last_round}; continuing it")
                settings = continuation(interrupted)
            submit_and_follow(plan.options.control(), settings, state_dir,
                              plan.output_dir, echo,
                              alive=lambda: superlink.poll() is None, live=plan.live)
        if plan.exit_when_done:
            return
        echo("Server ready; stop it with Ctrl-C.")
        superlink.wait()
        raise FedfleetError(f"the SuperLink exited with code {superlink.returncode}; "
                            f"see {state_dir}/superlink.log")
    except KeyboardInterrupt:
        echo("Stopping.")
    except FedfleetError as err:
        write_status(state_dir, "failed", str(err))
        raise
    finally:
        ready.unlink(missing_ok=True)
        process.stop(superlink)
        _stopped(state_dir)


def _stopped(state_dir: Path) -> None:
    """Say the server stopped, unless it already said why it failed."""
    last = read_status(state_dir / STATUS_FILE)
    if last is None or last.phase != "failed":
        write_status(state_dir, "stopped", "stopped")


def _progress_writer(state_dir: Path, every: float = 0.5) -> Callable[[int, int], None]:
    """Return a progress callback that records 'registering N of M' (at most 2/s)."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= every:
            last[0] = now
            write_status(state_dir, "registering", done=done, total=total)
    return progress


def submit_and_follow(control: Control, settings: RunSettings, state_dir: Path,
                      output_dir: Path, echo: Echo,
                      alive: Callable[[], bool] = lambda: True,
                      live: bool = False, simulation: Simulation | None = None) -> int:
    """Submit a run and follow it: a line per round (or, ``live``, a redrawn view).

    Ends with the summary line; returns the run's ID. ``simulation``: submit it as a
    simulation run.
    """
    run_id = control.submit(settings, state_dir / "bundle", simulation)
    local = (f" with local SGD (momentum {settings.momentum:g})"
             if settings.optimizer == "sgd" else "")
    echo(f"Run {run_id} started: {settings.num_rounds} rounds of "
         f"{settings.strategy}{local}, waiting for {settings.min_clients} clients")
    follower = RunFollower(control, run_id, output_dir, on_line=echo)
    if live:
        follower.show = LiveView(sys.stdout, run_id).show
    record = follower.follow(alive)
    echo(summary(record, output_dir / f"run-{run_id}"))
    return run_id
