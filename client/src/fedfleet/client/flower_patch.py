"""Set the SuperNode's idle poll and heartbeat intervals: a pinned patch of Flower 1.42.0.

Flower 1.42.0's SuperNode has no setting for either. After a poll that brought no
message it runs ``time.sleep(3)`` (in ``start_client_internal``'s loop), and it sends
a heartbeat every ``HEARTBEAT_DEFAULT_INTERVAL`` (30 s), the value it also announces
to the SuperLink in ``ActivateNodeRequest`` and ``SendNodeHeartbeatRequest`` (the
SuperLink accepts 10..1800 s and marks a node offline after 2 missed intervals).

:func:`apply` changes exactly those spots, in this process only:

- ``flwr.supernode.start_client_internal.time`` becomes an :class:`IdleSleepTime`,
  whose ``sleep(3)`` sleeps the poll interval; every other call goes to ``time``.
- ``flwr.supernode.fleet_http_connection.HEARTBEAT_DEFAULT_INTERVAL`` becomes the
  heartbeat interval (what the SuperLink is told), and that module's
  ``HeartbeatSender`` a subclass whose loop is Flower's own, reading the new interval
  (how often the heartbeat is sent).

:func:`check_flower` refuses any Flower whose source does not have exactly these
spots, so a Flower upgrade fails loudly instead of silently ignoring the settings.
Nothing here imports Flower until a function is called.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import textwrap
import time
import types
from collections.abc import Callable
from typing import Any

from fedfleet.shared.errors import FedfleetError

FLOWER_VERSION = "1.42.0"
FLOWER_POLL_INTERVAL = 3.0
"""Seconds Flower's SuperNode waits after a poll that brought no message."""
FLOWER_HEARTBEAT_INTERVAL = 30.0
"""Flower's ``HEARTBEAT_DEFAULT_INTERVAL``."""
POLL_INTERVAL_RANGE = (0.5, 300.0)
HEARTBEAT_INTERVAL_RANGE = (10.0, 1800.0)
"""What the SuperLink accepts (``HEARTBEAT_MIN_INTERVAL``, ``HEARTBEAT_MAX_INTERVAL``)."""

LOOP_MODULE = "flwr.supernode.start_client_internal"
CONNECTION_MODULE = "flwr.supernode.fleet_http_connection"
HEARTBEAT_MODULE = "flwr.supercore.heartbeat"
HEARTBEAT_NAME = "HEARTBEAT_DEFAULT_INTERVAL"
HEARTBEAT_REQUESTS = ("ActivateNodeRequest", "SendNodeHeartbeatRequest")


class PatchError(FedfleetError):
    """The installed Flower is not the one this patch was written for."""


class IdleSleepTime:
    """Stand-in for ``time`` in Flower's SuperNode loop: the idle ``sleep(3)`` changes.

    Parameters
    ----------
    poll_interval
        Seconds to sleep where Flower sleeps ``FLOWER_POLL_INTERVAL``.
    real
        The module every other call (and every other ``sleep``) goes to.
    """

    def __init__(self, poll_interval: float, real: Any = time) -> None:
        """Sleep ``poll_interval`` instead of Flower's idle 3 s; pass the rest on."""
        self.poll_interval = poll_interval
        self._real = real

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or the poll interval when Flower asks for its idle 3 s."""
        self._real.sleep(self.poll_interval if seconds == FLOWER_POLL_INTERVAL
                         else seconds)

    def __getattr__(self, name: str) -> Any:
        """Return ``time``'s attribute ``name`` (``time()``, ``monotonic()``, ...)."""
        return getattr(self._real, name)


def require_version() -> None:
    """Check the installed Flower's version without importing it.

    Raises
    ------
    PatchError
        If it is not ``FLOWER_VERSION``.
    """
    try:
        installed = importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        installed = "none"
    if installed != FLOWER_VERSION:
        raise PatchError(_mismatch(f"flwr {installed} is installed"))


def check_flower() -> None:
    """Check that the imported Flower has exactly the spots :func:`apply` changes.

    Raises
    ------
    PatchError
        Naming the first spot that differs.
    """
    import flwr

    if flwr.__version__ != FLOWER_VERSION:
        raise PatchError(_mismatch(f"flwr {flwr.__version__} is installed"))
    _check_idle_sleep()
    _check_heartbeat()


def apply(poll_interval: float, heartbeat_interval: float) -> None:
    """Make this process's SuperNode poll and send heartbeats at these intervals.

    Flower's defaults change nothing (and need no check).

    Parameters
    ----------
    poll_interval
        Seconds between polls while idle (Flower: 3).
    heartbeat_interval
        Seconds between heartbeats, as announced to the SuperLink (Flower: 30).

    Raises
    ------
    PatchError
        If Flower is not the one this patch was written for.
    ValueError
        If an interval is outside its range.
    """
    _in_range("poll interval", poll_interval, POLL_INTERVAL_RANGE)
    _in_range("heartbeat interval", heartbeat_interval, HEARTBEAT_INTERVAL_RANGE)
    poll = poll_interval != FLOWER_POLL_INTERVAL
    heartbeat = heartbeat_interval != FLOWER_HEARTBEAT_INTERVAL
    if not (poll or heartbeat):
        return
    check_flower()
    if poll:
        _module(LOOP_MODULE).time = IdleSleepTime(poll_interval)
    if heartbeat:
        connection = _module(CONNECTION_MODULE)
        setattr(connection, HEARTBEAT_NAME, heartbeat_interval)
        connection.HeartbeatSender = node_heartbeat_sender(heartbeat_interval)


def node_heartbeat_sender(interval: float) -> type:
    """Return Flower's ``HeartbeatSender`` with its loop reading ``interval``.

    The loop is Flower's own function (same jitter and retries), run with
    ``HEARTBEAT_DEFAULT_INTERVAL`` bound to ``interval``.
    """
    sender: Any = _module(HEARTBEAT_MODULE).HeartbeatSender
    run = _with_globals(sender._run, **{HEARTBEAT_NAME: interval})
    return type("NodeHeartbeatSender", (sender,), {"_run": run,
                                                    "heartbeat_interval": interval})


def _with_globals(func: Callable[..., Any], **overrides: Any) -> Callable[..., Any]:
    """Return a copy of ``func`` that sees ``overrides`` as module globals."""
    copy = types.FunctionType(func.__code__, {**func.__globals__, **overrides},
                              func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__qualname__ = func.__qualname__
    return copy


def _check_idle_sleep() -> None:
    module = _module(LOOP_MODULE)
    if module.time is not time:
        raise PatchError(_mismatch(f"{LOOP_MODULE}.time is not the time module"))
    tree = ast.parse(inspect.getsource(module))
    sleeps = [node for node in ast.walk(tree) if _is_call(node, "time.sleep")]
    idle = [node for node in sleeps if _constant_arg(node) == FLOWER_POLL_INTERVAL]
    if len(idle) != 1:
        raise PatchError(_mismatch(
            f"{LOOP_MODULE} has {len(idle)} time.sleep(3) calls, expected 1"))
    loop = _function(tree, "start_client_internal")
    branches = [node for node in ast.walk(loop) if isinstance(node, ast.If)
                and ast.unparse(node.test) == "run_id is None"]
    if not (len(branches) == 1 and ast.unparse(branches[0]).splitlines()[1:] ==
            ["    time.sleep(3)", "    continue"]):
        raise PatchError(_mismatch(
            "start_client_internal's loop no longer sleeps 3 s in an "
            "'if run_id is None:' branch"))


def _check_heartbeat() -> None:
    connection = _module(CONNECTION_MODULE)
    heartbeat = _module(HEARTBEAT_MODULE)
    for where in (connection, heartbeat):
        if getattr(where, HEARTBEAT_NAME, None) != FLOWER_HEARTBEAT_INTERVAL:
            raise PatchError(_mismatch(f"{where.__name__}.{HEARTBEAT_NAME} is not 30"))
    if connection.HeartbeatSender is not heartbeat.HeartbeatSender:
        raise PatchError(_mismatch(f"{CONNECTION_MODULE}.HeartbeatSender is not "
                                   f"{HEARTBEAT_MODULE}.HeartbeatSender"))
    function = _function(ast.parse(inspect.getsource(connection)), "http_request_response")
    uses = [node for node in ast.walk(function)
            if isinstance(node, ast.Name) and node.id == HEARTBEAT_NAME]
    announced = sorted(
        ast.unparse(node.func) for node in ast.walk(function)
        if isinstance(node, ast.Call) and any(
            kw.arg == "heartbeat_interval" and ast.unparse(kw.value) == HEARTBEAT_NAME
            for kw in node.keywords))
    if len(uses) != 2 or announced != sorted(HEARTBEAT_REQUESTS):
        raise PatchError(_mismatch(
            f"http_request_response no longer sends {HEARTBEAT_NAME} exactly in "
            f"{' and '.join(HEARTBEAT_REQUESTS)} (found {announced})"))
    senders = [node for node in ast.walk(function) if _is_call(node, "HeartbeatSender")]
    run = heartbeat.HeartbeatSender._run
    run_source = textwrap.dedent(inspect.getsource(run))
    if (len(senders) != 1 or run.__closure__ is not None
            or HEARTBEAT_NAME not in run.__code__.co_names
            or run_source.count(HEARTBEAT_NAME) != 1):
        raise PatchError(_mismatch(
            f"the node's HeartbeatSender no longer reads {HEARTBEAT_NAME} once, in "
            "HeartbeatSender._run"))


def _is_call(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func) == name


def _constant_arg(call: ast.AST) -> object:
    assert isinstance(call, ast.Call)
    if len(call.args) == 1 and isinstance(call.args[0], ast.Constant):
        return call.args[0].value
    return None


def _function(tree: ast.AST, name: str) -> ast.AST:
    found = [node for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef) and node.name == name]
    if len(found) != 1:
        raise PatchError(_mismatch(f"Flower has {len(found)} functions named {name}"))
    return found[0]


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def _in_range(what: str, value: float, bounds: tuple[float, float]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{what} {value:g}s is outside {bounds[0]:g}..{bounds[1]:g}s")


def _mismatch(detail: str) -> str:
    return (f"--poll-interval/--heartbeat-interval patch Flower {FLOWER_VERSION}'s "
            f"SuperNode, but {detail}; install flwr=={FLOWER_VERSION} or use the "
            "defaults (3 and 30)")
