"""Turns this device's ClientApp hostile (tests only; see hostile_device.py).

Python imports ``sitecustomize`` at start-up from the first directory on PYTHONPATH
that has one. Putting this folder on a device's PYTHONPATH reaches every process
its SuperNode starts, including each ``flwr-clientapp``; only those are changed.
"""

import os
import sys

if os.path.basename(sys.argv[0]) == "flwr-clientapp" and \
        os.environ.get("FEDFLEET_HOSTILE_LOG"):
    import hostile_device

    hostile_device.install()
