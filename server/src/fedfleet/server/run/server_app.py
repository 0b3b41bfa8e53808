"""The Flower ServerApp: one training run, from the first global model to the final one.

It puts the run's parts together (see docs/architecture.md): the model, the run
record and its files, the reply intake, the weight codec, the round policy and the
chosen Flower strategy inside :class:`~fedfleet.server.run.wrapper.FedfleetStrategy`;
continues an interrupted run when asked; runs the rounds on a grid that closes them
promptly; saves the final model and sends it home to every device that trained.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedfleet.server.results.run_files import RunFiles
from fedfleet.server.run.central import CentralEvaluator
from fedfleet.server.run.codec import WeightCodec
from fedfleet.server.run.delivery import deliver_final_model
from fedfleet.server.run.grid import PromptGrid
from fedfleet.server.run.intake import Intake, IntakeLimits
from fedfleet.server.run.pace import PaceBook
from fedfleet.server.run.progress import ProgressFile
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.server.run.resume import continue_run, resume_point
from fedfleet.server.run.round_policy import RoundPolicy
from fedfleet.server.run.strategies import make_strategy
from fedfleet.server.run.watch import RunWatch
from fedfleet.server.run.wrapper import FedfleetStrategy
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.logs import get_logger
from fedfleet.shared.models import build_model
from fedfleet.shared.runrecord import RunInfo
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import specs_of

log = get_logger()

app = ServerApp()

FINAL_MODEL_TIMEOUT = 120.0
"""Seconds the devices get to store the final model (a ClientApp start and a TFLite
conversion); a device that does not answer by then is recorded as such."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` rounds of the configured strategy and save the final model."""
    settings = RunSettings.from_run_config(context.run_config)
    files = None
    if settings.output_dir:
        files = RunFiles(Path(settings.output_dir) / f"run-{context.run_id}")
    keras.utils.set_random_seed(settings.data_seed)  # same initial model for the same seed
    model = build_model(settings.model, settings.shape, settings.num_classes,
                        settings.learning_rate, settings.optimizer, settings.momentum)
    weights = model.get_weights()
    specs = specs_of(weights)
    info: RunInfo = {"run_id": context.run_id, "started_at": time.time(),
                     "num_rounds": settings.num_rounds,
                     "settings": settings.to_run_config(),
                     "num_params": int(sum(w.size for w in weights)),
                     "model_bytes": int(sum(w.nbytes for w in weights))}
    recorder = RunRecorder(files, info, straggler_rounds=settings.straggler_rounds)
    progress = ProgressFile(files.directory if files else None, settings.num_rounds)
    watch = RunWatch(files.directory if files else None,
                     Path(settings.tensorboard) / f"run-{context.run_id}"
                     if settings.tensorboard else None,
                     keep_checkpoints=settings.keep_checkpoints)
    try:
        strategy = FedfleetStrategy(
            make_strategy(settings),
            intake=Intake(specs, settings.compression,
                          IntakeLimits.from_settings(settings)),
            codec=WeightCodec(specs, settings.compression),
            recorder=recorder, policy=RoundPolicy.from_settings(settings), model=model,
            progress=progress, watch=watch)
        if settings.resume_from:
            point = resume_point(Path(settings.resume_from))
            if point is None:
                raise FedfleetError(f"cannot continue the run in {settings.resume_from}: "
                                    "no unfinished run with a checkpoint there")
            strategy.offset = continue_run(point, context.run_id, model, strategy.inner,
                                           recorder)
        result = strategy.start(
            grid=PromptGrid(grid, quorum=settings.round_quorum,
                            grace=settings.round_grace,
                            min_grace=settings.round_min_grace, progress=progress,
                            pace=PaceBook(settings.round_pace_margin,
                                          settings.round_pace_cap)
                            if settings.round_deadline == "paced" else None),
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=settings.num_rounds - strategy.offset,
            timeout=settings.round_timeout,
            train_config=ConfigRecord(),
            evaluate_fn=strategy.round_end(CentralEvaluator(settings, model)),
        )
    except FedfleetError as err:
        log.error("Run failed: %s", err)
        recorder.finish("failed", str(err))
        watch.run_done(recorder.record)
        raise
    except Exception as err:
        recorder.finish("failed", f"{type(err).__name__}: {err}")
        watch.run_done(recorder.record)
        raise
    final = None
    if len(result.arrays):
        if files is not None:
            model.set_weights(result.arrays.to_numpy_ndarrays())
            final = files.final_model
            files.save_model(model, final)
        deliver_final_model(grid, recorder, result.arrays,
                            min(settings.round_timeout, FINAL_MODEL_TIMEOUT))
    recorder.finish("completed")
    watch.run_done(recorder.record, final)
    log.info("Run %s completed", context.run_id)
