"""The global weights on their way out, and the aggregate on its way back to the model.

Outgoing: with ``--compression`` on, every instruction carries the global weights
packed once (:func:`fedfleet.shared.compression.encode_weights`); the bytes sent are
counted for the record. Incoming updates are decoded by the reply intake.

Back to the model: server-side optimizers (FedAdam and the FedOpt family) compute in
float64; the model, and every client, expects the model's own dtypes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message

from fedfleet.shared.compression import encode_weights
from fedfleet.shared.constants import ARRAYS_KEY
from fedfleet.shared.weights import WeightSpec


class WeightCodec:
    """Encodes outgoing global weights; casts aggregates to the model's dtypes."""

    def __init__(self, specs: Sequence[WeightSpec], compression: str = "none") -> None:
        """Handle weights of ``specs`` sent with ``compression``."""
        self.specs = list(specs)
        self.compression = compression

    def outgoing(self, messages: Iterable[Message], arrays: ArrayRecord
                 ) -> tuple[list[Message], int]:
        """Put the encoded global weights in ``messages``; return them and bytes sent."""
        messages = list(messages)
        payload = arrays
        if self.compression != "none" and messages:
            payload = ArrayRecord(encode_weights(arrays.to_numpy_ndarrays(),
                                                 self.compression))
            for msg in messages:
                msg.content[ARRAYS_KEY] = payload
        size = sum(a.nbytes for a in payload.to_numpy_ndarrays())
        return messages, size * len(messages)

    def conform(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """Return ``arrays`` cast to the model's dtypes (unchanged if they match)."""
        if arrays is None:
            return None
        values = arrays.to_numpy_ndarrays()
        if all(np.dtype(a.dtype).name == dtype
               for a, (_, dtype) in zip(values, self.specs, strict=False)):
            return arrays
        return ArrayRecord([a.astype(dtype)
                            for a, (_, dtype) in zip(values, self.specs, strict=True)])
