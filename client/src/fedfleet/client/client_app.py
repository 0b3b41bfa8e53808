"""The Flower ClientApp: unpacks messages, calls the LocalTrainer, packs replies."""

from __future__ import annotations

from functools import lru_cache

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfleet.client.training import LocalTrainer, NodeData
from fedfleet.shared.constants import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedfleet.shared.errors import VersionMismatchError
from fedfleet.shared.logs import get_logger
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__, compatible

log = get_logger()

app = ClientApp()


@lru_cache(maxsize=4)
def _trainer(node: NodeData) -> LocalTrainer:
    return LocalTrainer(node)


def _prepare(msg: Message, context: Context) -> tuple[LocalTrainer, RunSettings]:
    """Check versions and read settings; raise with a message the server will log."""
    settings = RunSettings.from_run_config(context.run_config)
    if not compatible(settings.fedfleet_version, __version__):
        raise VersionMismatchError(
            f"server runs fedfleet {settings.fedfleet_version}, this client "
            f"{__version__}; install the matching release on the client "
            f"(pip install 'fedfleet-client~={settings.fedfleet_version}')"
        )
    return _trainer(NodeData.from_node_config(context.node_config)), settings


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this device's data."""
    trainer, settings = _prepare(msg, context)
    config = msg.content.config_records.get(CONFIG_KEY)
    mu = config.get("proximal-mu", 0.0) if config is not None else 0.0  # set by FedProx
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    new_weights, metrics = trainer.train(weights, settings,
                                         proximal_mu=float(mu))  # type: ignore[arg-type]
    log.info("Trained on %d samples in %.2fs: loss %.4f",
             int(metrics["num-examples"]), metrics["train_time_s"], metrics["train_loss"])
    content = RecordDict({ARRAYS_KEY: ArrayRecord(new_weights),
                          METRICS_KEY: MetricRecord(metrics)})  # type: ignore[arg-type]
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this device's hold-out data."""
    trainer, settings = _prepare(msg, context)
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    metrics = trainer.evaluate(weights, settings)
    content = RecordDict({METRICS_KEY: MetricRecord(metrics)})  # type: ignore[arg-type]
    return Message(content=content, reply_to=msg)
