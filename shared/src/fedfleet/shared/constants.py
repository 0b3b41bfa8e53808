"""Ports, addresses, file names and record keys used on both sides."""

import os

SUPERLINK_PORT = int(os.getenv("FEDFLEET_SUPERLINK_PORT", "8000"))
"""The SuperLink's single HTTP port (Fleet, Control and Runtime APIs)."""

SUPERNODE_PORT = int(os.getenv("FEDFLEET_SUPERNODE_PORT", "9094"))
"""The SuperNode's local Runtime API port (ClientApp processes talk to it)."""

BUILTIN_PREFIX = "builtin:"
"""Prefix of a data path that names a dataset shipped with fedfleet."""

DEFAULT_DATASET = "builtin:digits"

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
NUM_EXAMPLES_KEY = "num-examples"

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
FINAL_MODEL = "final_model.keras"
CHECKPOINT_DIR = "checkpoints"

ACTIVITY_FILE = "activity.json"
"""In ``fedfleet join``'s home: whether the device is working on a message (idle/busy)."""
