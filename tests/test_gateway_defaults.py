"""The gateway's defaults live in its entrypoint; the README quotes them, nothing repeats them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "gateway" / "entrypoint.sh"


def _defaults() -> dict[str, str]:
    """Return the entrypoint's ``${FEDFLEET_GATEWAY_X:-default}`` values."""
    text = ENTRYPOINT.read_text()
    return dict(re.findall(r"\$\{(FEDFLEET_GATEWAY_\w+):-([^}]*)\}", text))


def test_the_readme_quotes_the_entrypoints_defaults() -> None:
    """Every default the README gives for a gateway variable is the entrypoint's."""
    # Prepare
    defaults = _defaults()
    readme = (ROOT / "README.md").read_text()
    # Execute
    quoted = re.findall(r"`(FEDFLEET_GATEWAY_\w+)`(?: \| | \()`?([^`|)]+?)`? ?[|)]", readme)
    # Assert
    assert len(quoted) >= 5
    for name, value in quoted:
        assert defaults.get(name) == value, name


def test_image_and_compose_set_no_limit() -> None:
    """Neither the image nor compose.yaml states a gateway limit of its own."""
    # Prepare
    limits = {name for name in _defaults()
              if name not in ("FEDFLEET_GATEWAY_LISTEN", "FEDFLEET_GATEWAY_UPSTREAM",
                              "FEDFLEET_GATEWAY_UPSTREAM_NAME")}
    dockerfile = (ROOT / "Dockerfile.gateway").read_text()
    compose = (ROOT / "compose.yaml").read_text()
    # Execute
    in_image = [n for n in limits if re.search(rf"{n}=", dockerfile)]
    in_compose = [n for n in limits  # ${N:-v}, N: v or N=v; a bare "N:" passes it on
                  if re.search(rf"\$\{{{n}:-|\b{n}(?::[ \t]*[^\s#]|=)", compose)]
    # Assert
    assert in_image == []
    assert in_compose == []
