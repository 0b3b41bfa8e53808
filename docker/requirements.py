"""Print the third-party requirements of fedfleet packages, one per line, for pip -r.

Images install these before copying the source, so code changes do not
re-download TensorFlow. Usage:

    python requirements.py 'shared/pyproject.toml[tensorflow]' client/pyproject.toml ...

``[extra,...]`` after a path adds that package's optional dependencies. A
requirement on another fedfleet package (``fedfleet-shared[tensorflow]==0.1.0``) is
replaced by that package's own requirements and the extras it names, read from the
sibling folder (``shared/pyproject.toml`` next to ``client/``).
"""

import re
import sys
from pathlib import Path

import tomllib

_FEDFLEET = re.compile(r"^fedfleet-([a-z]+)\s*(?:\[([^\]]*)\])?")


def _split(arg: str) -> tuple[Path, list[str]]:
    path, _, extras = arg.partition("[")
    return Path(path), [e.strip() for e in extras.rstrip("]").split(",") if e.strip()]


def requirements(pyproject: Path, extras: list[str], seen: set[str]) -> list[str]:
    """Return the non-fedfleet requirements of ``pyproject`` with ``extras``."""
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {})[extra]
    out: list[str] = []
    for req in reqs:
        match = _FEDFLEET.match(req)
        if match is None:
            out.append(req)
            continue
        key = f"{match.group(1)}[{match.group(2) or ''}]"
        if key in seen:
            continue
        seen.add(key)
        sibling = pyproject.parent.parent / match.group(1) / "pyproject.toml"
        if sibling.exists():
            out += requirements(sibling, _split(f"x[{match.group(2) or ''}]")[1], seen)
    return out


def main() -> None:
    """Print every requirement that is not itself a fedfleet package, once."""
    printed: set[str] = set()
    for arg in sys.argv[1:]:
        path, extras = _split(arg)
        for req in requirements(path, extras, set()):
            if req not in printed:
                printed.add(req)
                print(req)


if __name__ == "__main__":
    main()
