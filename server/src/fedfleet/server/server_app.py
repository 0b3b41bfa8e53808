"""The Flower ServerApp: builds the model, runs the chosen strategy, records every round."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedfleet.server.grid import PromptGrid
from fedfleet.server.outputs import RunOutputs
from fedfleet.server.recorder import RecordingMixin, RunRecorder, UpdateLimits
from fedfleet.server.resume import (
    ResumePoint,
    restore_strategy_state,
    resume_point,
    save_strategy_state,
    state_path,
)
from fedfleet.server.strategies import make_strategy
from fedfleet.shared.atomic import copy_atomic
from fedfleet.shared.data import fit_to_shape, load_dataset
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.logs import get_logger
from fedfleet.shared.models import build_model
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import specs_of

log = get_logger()

app = ServerApp()


def central_evaluator(settings: RunSettings, model: Any, recorder: RunRecorder,
                      strategy: Any, offset: int = 0) -> Any:
    """Return Flower's ``evaluate_fn``: test-set metrics, then the round's bookkeeping.

    ``offset``: rounds done before a resume; Flower counts this run's rounds from 1.
    """
    test = None
    if settings.eval_data:
        test = fit_to_shape(load_dataset(settings.eval_data, split="test"), settings.shape)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        central = None
        if test is not None:
            model.set_weights(arrays.to_numpy_ndarrays())
            loss, acc = model.evaluate(test.x, test.y, batch_size=256, verbose=0)
            central = {"loss": float(loss), "accuracy": float(acc)}
        if server_round == 0 and offset:
            return MetricRecord(central) if central else None  # type: ignore[arg-type]
        recorder.end_round(offset + server_round, arrays, central)
        if recorder.outputs is not None and server_round > 0:
            save_strategy_state(strategy, state_path(recorder.outputs.directory,
                                                     offset + server_round))
        return MetricRecord(central) if central else None  # type: ignore[arg-type]

    return evaluate


def _continue(resume: ResumePoint, run_id: int, model: Any, recorder: RunRecorder,
              strategy: Any) -> None:
    """Start from the interrupted run's last round: weights, strategy state, history."""
    model.set_weights(keras.models.load_model(resume.checkpoint).get_weights())
    state = state_path(resume.run_dir, resume.last_round)
    if state.exists():
        restore_strategy_state(strategy, state)
    strategy.round_offset = resume.last_round
    if recorder.outputs is not None:  # so a crash before the next round resumes too
        copy_atomic(resume.checkpoint, recorder.outputs.checkpoint(resume.last_round))
        if state.exists():
            copy_atomic(state, state_path(recorder.outputs.directory, resume.last_round))
    recorder.record["run"]["resumed_from"] = {"run_id": resume.run_id,
                                              "round": resume.last_round}
    recorder.record["initial"] = resume.record.get("initial")
    recorder.record["rounds"] = list(resume.record["rounds"])
    recorder.save()
    previous = dict(resume.record, status="interrupted", continued_by=run_id)
    RunOutputs(resume.run_dir).write_metrics(previous)
    log.info("Continuing run %s after its round %d", resume.run_id, resume.last_round)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` rounds of the configured strategy and save the final model."""
    settings = RunSettings.from_run_config(context.run_config)
    outputs = None
    if settings.output_dir:
        outputs = RunOutputs(Path(settings.output_dir) / f"run-{context.run_id}")
    keras.utils.set_random_seed(settings.data_seed)  # same initial model for the same seed
    model = build_model(settings.model, settings.shape, settings.num_classes,
                        settings.learning_rate)
    weights = model.get_weights()
    info = {"run_id": context.run_id, "started_at": time.time(),
            "num_rounds": settings.num_rounds, "settings": settings.to_run_config(),
            "num_params": int(sum(w.size for w in weights)),
            "model_bytes": int(sum(w.nbytes for w in weights))}
    recorder = RunRecorder(outputs, info, specs_of(weights), model, settings.compression,
                           UpdateLimits(settings.min_replies))
    try:
        strategy = make_strategy(settings, base=RecordingMixin)
        strategy.recorder = recorder  # type: ignore[attr-defined]
        strategy.settings = settings  # type: ignore[attr-defined]
        offset = 0
        if settings.resume_from:
            resume = resume_point(Path(settings.resume_from))
            if resume is None:
                raise FedfleetError(f"cannot continue the run in {settings.resume_from}: "
                                    "no unfinished run with a checkpoint there")
            _continue(resume, context.run_id, model, recorder, strategy)
            offset = resume.last_round
        result = strategy.start(
            grid=PromptGrid(grid, quorum=settings.round_quorum,
                            grace=settings.round_grace),
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=settings.num_rounds - offset,
            timeout=settings.round_timeout,
            train_config=ConfigRecord(),
            evaluate_fn=central_evaluator(settings, model, recorder, strategy, offset),
        )
    except FedfleetError as err:
        log.error("Run failed: %s", err)
        recorder.finish("failed", str(err))
        raise
    except Exception as err:
        recorder.finish("failed", f"{type(err).__name__}: {err}")
        raise
    if len(result.arrays) and outputs is not None:
        model.set_weights(result.arrays.to_numpy_ndarrays())
        outputs.save_model(model, outputs.final_model)
    recorder.finish("completed")
    log.info("Run %s completed", context.run_id)
