"""Centralized evaluation: the global model on the server's own test set (``--eval-data``)."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord

from fedfleet.shared.data import fit_to_shape, load_dataset
from fedfleet.shared.runrecord import CentralScores
from fedfleet.shared.settings import RunSettings


class CentralEvaluator:
    """Scores weights with ``model`` on the run's test set; None without one."""

    def __init__(self, settings: RunSettings, model: Any) -> None:
        """Load the test set named by ``settings.eval_data`` (if any) once."""
        self.model = model
        self.test = None
        if settings.eval_data:
            self.test = fit_to_shape(load_dataset(settings.eval_data, split="test"),
                                     settings.shape)

    def __call__(self, arrays: ArrayRecord) -> CentralScores | None:
        """Return the test-set loss and accuracy of ``arrays``."""
        if self.test is None:
            return None
        self.model.set_weights(arrays.to_numpy_ndarrays())
        loss, accuracy = self.model.evaluate(self.test.x, self.test.y, batch_size=256,
                                             verbose=0)
        return {"loss": float(loss), "accuracy": float(accuracy)}
