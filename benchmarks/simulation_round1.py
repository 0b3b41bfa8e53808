"""Round 1 of a simulated run redone in one process: the simulation's seeds, then others.

    flock /work/bench.lock .venv/bin/python benchmarks/simulation_round1.py \\
        OUT/agreement-*/sim-1/out/run-*/metrics.json --seeds 12      # ~2 min

For ``benchmarks/simulation.py agreement``: is the simulated run's round-1 accuracy
one draw of the noise of local training, or a difference between simulation and a
real fleet? With the run's settings (from its ``metrics.json``), the ServerApp's
seeded initial model and each device's own trainer (``LocalTrainer`` on partition i of
N of the built-in digits), it trains every device once, averages the weights by
examples (FedAvg) and scores the digits test set: first with the simulation's
per-device seeds (it should reproduce the simulated round 1), then with ``--seeds``
other seed sets. Prints one line per seed set: accuracy and loss.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def round_one(settings: object, init: list[np.ndarray], devices: int,
              seeds: list[int]) -> tuple[float, float]:
    """Return the test accuracy and loss of one FedAvg round with these device seeds."""
    import keras

    from fedfleet.client.nodedata import NodeData
    from fedfleet.client.training import LocalTrainer
    from fedfleet.shared.constants import NUM_EXAMPLES_KEY
    from fedfleet.shared.data import load_dataset
    from fedfleet.shared.models import build_model
    from fedfleet.shared.settings import RunSettings

    assert isinstance(settings, RunSettings)
    updates, sizes = [], []
    for device, seed in enumerate(seeds):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        trainer = LocalTrainer(NodeData(data_path="builtin:digits", partition_id=device,
                                        num_partitions=devices))
        weights, metrics = trainer.train(init, settings)
        updates.append(weights)
        sizes.append(metrics[NUM_EXAMPLES_KEY])
    average = [sum(w[k] * n for w, n in zip(updates, sizes, strict=True)) / sum(sizes)
               for k in range(len(init))]
    model = build_model(settings.model, settings.shape, settings.num_classes,
                        settings.learning_rate, settings.optimizer, settings.momentum)
    model.set_weights(average)
    test = load_dataset("builtin:digits", split="test")
    loss, accuracy = model.evaluate(test.x, test.y, batch_size=256, verbose=0)
    return float(accuracy), float(loss)


def main(argv: list[str] | None = None) -> int:
    """Print round 1 with the simulation's seeds and with ``--seeds`` other seed sets."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("metrics", type=Path, help="the simulated run's metrics.json")
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=12, help="other seed sets to try")
    args = parser.parse_args(argv)

    import keras

    from fedfleet.server.simulation.client_app import device_seed
    from fedfleet.shared.models import build_model
    from fedfleet.shared.settings import RunSettings

    settings = RunSettings.from_run_config(
        json.loads(args.metrics.read_text())["run"]["settings"])
    keras.utils.set_random_seed(settings.data_seed)  # as the ServerApp does
    init = build_model(settings.model, settings.shape, settings.num_classes,
                       settings.learning_rate, settings.optimizer,
                       settings.momentum).get_weights()
    sim = [device_seed(settings.data_seed, d, 1) for d in range(args.devices)]
    accuracy, loss = round_one(settings, init, args.devices, sim)
    print(f"simulation's seeds: accuracy {accuracy:.4f}, loss {loss:.4f}", flush=True)
    for k in range(args.seeds):
        seeds = [1000 * k + d for d in range(args.devices)]
        accuracy, loss = round_one(settings, init, args.devices, seeds)
        print(f"seeds {seeds}: accuracy {accuracy:.4f}, loss {loss:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
