"""Options several server commands share: run settings, how to reach the server."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from fedfleet.server.host.control import Control, connect
from fedfleet.server.host.runplan import plan_run
from fedfleet.server.run.strategies import STRATEGIES
from fedfleet.shared.compression import METHODS
from fedfleet.shared.constants import SUPERLINK_PORT
from fedfleet.shared.data.partition import PARTITIONINGS
from fedfleet.shared.options import ADDRESS
from fedfleet.shared.settings import CLIENT_EVAL, OPTIMIZERS, ROUND_DEADLINES, RunSettings
from fedfleet.shared.tables import rows_text

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
DIR = click.Path(file_okay=False, path_type=Path)
FORMATS = ("table", "json")

D = RunSettings  # defaults live on the dataclass: one source for CLI, compose and apps

RUN_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--rounds", type=click.IntRange(min=1),
                 default=D.num_rounds, show_default=True, help="Training rounds."),
    click.option("--local-epochs", type=click.IntRange(min=1), default=D.local_epochs,
                 show_default=True, help="Epochs each client trains per round."),
    click.option("--batch-size", type=click.IntRange(min=1), default=D.batch_size,
                 show_default=True, help="Client batch size."),
    click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
                 default=D.learning_rate, show_default=True,
                 help="Client learning rate (of --optimizer; SGD usually wants a "
                      "larger one than Adam, e.g. 0.05)."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS, case_sensitive=False),
                 default=D.optimizer, show_default=True,
                 help="Local optimizer on the devices: adam, or plain sgd (what most "
                      "federated optimization results assume), with --momentum."),
    click.option("--momentum", type=click.FloatRange(0, 1, max_open=True),
                 default=D.momentum, show_default=True,
                 help="sgd only: heavy-ball momentum, restarted from zero every "
                      "round (0: plain SGD)."),
    click.option("--fraction-train", type=click.FloatRange(0, 1, min_open=True),
                 default=D.fraction_train, show_default=True,
                 help="Share of connected clients that train each round (at least one)."),
    click.option("--fraction-evaluate", type=click.FloatRange(0, 1),
                 default=D.fraction_evaluate, show_default=True,
                 help="Share of clients that evaluate each round (0: none)."),
    click.option("--min-clients", type=click.IntRange(min=1), default=D.min_clients,
                 show_default=True, help="Clients needed before a round starts."),
    click.option("--strategy", type=click.Choice(list(STRATEGIES),
                 case_sensitive=False), default=D.strategy, show_default=True,
                 help="Aggregation strategy."),
    click.option("--strategy-param", multiple=True,
                 metavar="KEY=VALUE",
                 help="Strategy parameter, repeatable (e.g. proximal_mu=0.1, beta=0.2, "
                      "num_malicious_nodes=1, eta=0.01)."),
    click.option("--model", default=D.model, show_default=True,
                 help="Model: cnn, mlp, or package.module:function."),
    click.option("--input-shape", default=None,
                 help="Model input shape, e.g. 28,28,1 [default: from --eval-data]"),
    click.option("--num-classes", type=click.IntRange(min=2), default=None,
                 help="Number of classes [default: from --eval-data]"),
    click.option("--partitioning", type=click.Choice(PARTITIONINGS),
                 default=D.partitioning, show_default=True,
                 help="How demo clients split a shared dataset (--partition I/N)."),
    click.option("--dirichlet-alpha", type=click.FloatRange(min=0, min_open=True),
                 default=D.dirichlet_alpha, show_default=True,
                 help="Dirichlet concentration; small = more skewed labels."),
    click.option("--data-seed", type=int, default=D.data_seed, show_default=True,
                 help="Seed for partitions and local hold-out splits."),
    click.option("--eval-fraction", type=click.FloatRange(0, 1, max_open=True),
                 default=D.eval_fraction, show_default=True,
                 help="Share of each client's data held out for its evaluation."),
    click.option("--eval-data", default=D.eval_data, show_default=True,
                 help="Server-side test set for centralized evaluation ('' for none)."),
    click.option("--client-eval", type=click.Choice(CLIENT_EVAL),
                 default=D.client_eval, show_default=True,
                 help="with-train: clients score the global model at the start of the "
                      "next train message (one message per round); separate: Flower's "
                      "evaluate message every round."),
    click.option("--compression", type=click.Choice(METHODS),
                 default=D.compression, show_default=True,
                 help="Send global weights as float16 and client updates as float16 "
                      "or int8 (per-tensor scale); float16 is also deflated (lossless)."),
    click.option("--max-examples", type=click.IntRange(min=1), default=D.max_examples,
                 show_default=True,
                 help="Reject a reply claiming more training examples than this."),
    click.option("--max-examples-ratio", type=click.FloatRange(min=0),
                 default=D.max_examples_ratio, show_default=True,
                 help="A reply's num-examples counts at most this many times the "
                      "round's median claim in the weighted average (0: no cap)."),
    click.option("--max-update-norm-ratio", type=click.FloatRange(min=0),
                 default=D.max_update_norm_ratio, show_default=True,
                 help="Reject a reply whose update norm exceeds this many times the "
                      "round's median (needs 3+ replies; 0: off)."),
    click.option("--min-replies", type=click.IntRange(min=1), default=D.min_replies,
                 show_default=True,
                 help="Usable replies a round needs when it closes; with fewer the "
                      "run ends with the reasons."),
    click.option("--round-timeout", type=click.FloatRange(min=1), default=D.round_timeout,
                 show_default=True,
                 help="Seconds a round waits at most for client replies (the deadline "
                      "when fewer than --round-quorum answer)."),
    click.option("--round-quorum", type=click.FloatRange(0, 1, min_open=True),
                 default=D.round_quorum, show_default=True,
                 help="Share of the round's clients whose replies start the grace "
                      "period; 1 waits for all of them up to --round-timeout."),
    click.option("--round-grace", type=click.FloatRange(min=0), default=D.round_grace,
                 show_default=True,
                 help="After the quorum, wait this many times as long again as the "
                      "quorum took (at least --round-min-grace) for the other clients, then close "
                      "the round."),
    click.option("--round-min-grace", type=click.FloatRange(min=0),
                 default=D.round_min_grace, show_default=True,
                 help="The grace lasts at least this many seconds. Devices that look for "
                      "work every P s (fedfleet join --poll-interval) need P + 5: an idle "
                      "device may find its message up to P s after the round starts."),
    click.option("--keep-checkpoints", type=click.IntRange(min=0),
                 default=D.keep_checkpoints, show_default=True,
                 help="Keep only the checkpoints of the newest N rounds, plus the best "
                      "round's (test accuracy, else client eval accuracy); older ones "
                      "are deleted after each round and marked removed in models.json. "
                      "0 keeps all."),
    click.option("--round-deadline", type=click.Choice(ROUND_DEADLINES),
                 default=D.round_deadline, show_default=True,
                 help="fixed: close the round at the grace; paced: also wait for the "
                      "devices whose learned reply time (x --round-pace-margin) says "
                      "they will answer, at most --round-pace-cap x the quorum's time "
                      "(at least 60 s), "
                      "so slow but working devices count every round."),
    click.option("--round-pace-margin", type=click.FloatRange(min=1),
                 default=D.round_pace_margin, show_default=True,
                 help="paced: wait this many times a device's learned reply time."),
    click.option("--round-pace-cap", type=click.FloatRange(min=1),
                 default=D.round_pace_cap, show_default=True,
                 help="paced: a round waits at most this many times as long as its "
                      "quorum took (what a silent device costs)."),
    click.option("--straggler-rounds", type=click.IntRange(min=1),
                 default=D.straggler_rounds, show_default=True,
                 help="Warn when a device contributed to none of the last this many "
                      "rounds it was asked in."),
    click.option("--tensorboard", type=DIR, default=None,
                 help="Also write every round's scalars as TensorBoard event files under "
                      "DIR/run-<id> (view: tensorboard --logdir DIR)."),
    click.option("--client-wait-timeout", type=click.FloatRange(min=1),
                 default=D.client_wait_timeout, show_default=True,
                 help="Seconds to wait for --min-clients before giving up."),
]


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the run-setting options to a command."""
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


def settings_from(options: dict[str, Any], output_dir: Path) -> RunSettings:
    """Build run settings from parsed options (popping them from ``options``)."""
    values = {k: options.pop(k) for k in list(options)
              if k in RunSettings.__dataclass_fields__}
    values["num_rounds"] = options.pop("rounds")
    values["strategy_params"] = ",".join(options.pop("strategy_param") or ())
    tensorboard = values.pop("tensorboard", None)
    values["tensorboard"] = str(tensorboard.resolve()) if tensorboard else ""
    return plan_run(values, output_dir)


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that point the Control API client at a server."""
    for option in reversed([
        click.option("--server", type=ADDRESS, default=f"127.0.0.1:{SUPERLINK_PORT}",
                     show_default=True, help="The SuperLink (from the server host)."),
        click.option("--insecure", is_flag=True, help="The server runs without TLS."),
        click.option("--root-certificates", type=FILE, default=None,
                     envvar="FEDFLEET_ROOT_CERTIFICATES",
                     help="CA certificate of the server's TLS certificate "
                          "[default: certificates/ca.crt if present, else the system's]"),
        click.option("--state-dir", type=DIR, default=Path("fedfleet-state"),
                     show_default=True, help="Where the CLI keeps its settings."),
    ]):
        func = option(func)
    return func


def control_from(server: str, insecure: bool, root_certificates: Path | None,
                 state_dir: Path) -> Control:
    """Return the Control API client that :func:`connection_options` point at."""
    return connect(server, state_dir, insecure=insecure,
                   root_certificates=root_certificates)


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--format table|json``."""
    return click.option("--format", "format", type=click.Choice(FORMATS),
                        default="table", show_default=True,
                        help="Output format.")(func)


def echo_rows(rows: Sequence[Mapping[str, Any]], format: str, header: str,
              line: Callable[[Mapping[str, Any]], str]) -> None:
    """Print ``rows`` as :func:`rows_text` gives them: the CLI's one table printer."""
    click.echo(rows_text(rows, format, header, line))
