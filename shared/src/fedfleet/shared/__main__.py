"""Allow ``python -m fedfleet.shared``."""

from fedfleet.shared.cli import main

main()
