"""Run Flower's SuperNode with fedfleet's idle poll and heartbeat intervals.

``python -m fedfleet.client.supernode_main --poll-interval S --heartbeat-interval S
-- /path/to/flower-supernode --superlink ...`` applies :mod:`fedfleet.client.flower_patch`
in this process, then runs Flower's own SuperNode entry point (the target of the
``flower-supernode`` console script) with the arguments after ``--``, so the command
line still names ``flower-supernode`` for anything that looks for it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from fedfleet.client import flower_patch

SCRIPT = "flower-supernode"
EXIT_PATCH_FAILED = 2


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` into our options and the SuperNode's command line (after ``--``).

    Raises
    ------
    SystemExit
        With a usage message if the options or the ``--`` are missing.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fedfleet.client.supernode_main",
        description="Run flower-supernode with the given idle poll and heartbeat "
                    "intervals.")
    parser.add_argument("--poll-interval", type=float,
                        default=flower_patch.FLOWER_POLL_INTERVAL)
    parser.add_argument("--heartbeat-interval", type=float,
                        default=flower_patch.FLOWER_HEARTBEAT_INTERVAL)
    argv = list(argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error(f"give the {SCRIPT} command after '--'")
    split = argv.index("--")
    return parser.parse_args(argv[:split]), argv[split + 1:]


def flower_entry_point() -> Callable[[], None]:
    """Return the function the ``flower-supernode`` console script runs."""
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=SCRIPT)
    entry: Callable[[], None] = script.load()
    return entry


def main(argv: Sequence[str]) -> None:
    """Patch Flower, then run its SuperNode as if ``flower-supernode`` was started."""
    options, command = parse(argv)
    try:
        flower_patch.apply(options.poll_interval, options.heartbeat_interval)
    except (flower_patch.PatchError, ValueError) as err:
        print(f"fedfleet: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PATCH_FAILED)
    entry = flower_entry_point()
    sys.argv = command
    entry()


if __name__ == "__main__":
    main(sys.argv[1:])
