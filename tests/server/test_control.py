"""The Control API client's ``flwr`` path (runs): its settings, answers and errors.

A stand-in ``flwr`` script records how it was called and prints what the test tells
it to, so every branch runs without a SuperLink. Node calls go through Flower's HTTP
client in process instead: see ``test_control_api.py``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from fedfleet.server.host import control as control_module
from fedfleet.server.host.control import Control, connect
from fedfleet.shared import process
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.settings import RunSettings

FAKE_FLWR = """#!{python}
import json, os, sys, time
answer = json.load(open(os.environ["FAKE_FLWR_ANSWER"]))
with open(os.environ["FAKE_FLWR_CALLS"], "a") as calls:
    calls.write(json.dumps({{"argv": sys.argv[1:],
                             "config": open(os.path.join(os.environ["FLWR_HOME"],
                                                         "config.toml")).read()}}) + "\\n")
time.sleep(answer.get("sleep", 0))
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("code", 0))
"""


class FakeFlwr:
    """Installs the stand-in and says what its next call answers."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.script = tmp_path / "flwr"
        self.script.write_text(FAKE_FLWR.format(python=sys.executable))
        self.script.chmod(self.script.stat().st_mode | stat.S_IEXEC)
        self.answer_file = tmp_path / "answer.json"
        self.calls_file = tmp_path / "calls.jsonl"
        monkeypatch.setattr(process, "flower_executable", lambda name: str(self.script))
        monkeypatch.setenv("FAKE_FLWR_ANSWER", str(self.answer_file))
        monkeypatch.setenv("FAKE_FLWR_CALLS", str(self.calls_file))

    def answers(self, payload: dict[str, Any] | None = None, *, noise: str = "",
                stderr: str = "", code: int = 0, sleep: float = 0) -> None:
        stdout = noise + (json.dumps(payload) if payload is not None else "")
        self.answer_file.write_text(json.dumps({"stdout": stdout, "stderr": stderr,
                                                "code": code, "sleep": sleep}))

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]


@pytest.fixture
def flwr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFlwr:
    return FakeFlwr(tmp_path, monkeypatch)


def test_tls_connection_names_the_ca_and_calls_json(flwr: FakeFlwr, tmp_path: Path) -> None:
    """The connection trusts the given CA; every call asks for JSON."""
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    flwr.answers({"success": True, "runs": [{"run-id": 7, "status": "running"}]})
    rows = Control("fl.example.org:8000", tmp_path / "home",
                   insecure=False, root_certificates=ca).runs()
    assert rows == [{"run-id": 7, "status": "running"}]
    (call,) = flwr.calls()
    assert call["argv"] == ["ls", "fedfleet", "--format", "json"]
    assert 'address = "fl.example.org:8000"' in call["config"]
    assert f'root-certificates = "{ca.resolve()}"' in call["config"]
    assert "insecure" not in call["config"]


def test_insecure_connection(flwr: FakeFlwr, tmp_path: Path) -> None:
    flwr.answers({"success": True, "runs": []})
    assert Control("127.0.0.1:8000", tmp_path / "home").runs() == []
    assert "insecure = true" in flwr.calls()[0]["config"]


def test_connect_finds_the_default_ca(flwr: FakeFlwr, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS without a CA, certificates/ca.crt in the working folder is used."""
    monkeypatch.chdir(tmp_path)
    assert connect("h:1", tmp_path / "state").root_certificates is None
    (tmp_path / "certificates").mkdir()
    (tmp_path / "certificates" / "ca.crt").write_text("pem")
    found = connect("h:1", tmp_path / "state")
    assert found.root_certificates == control_module.DEFAULT_CA
    assert found.home == tmp_path / "state" / "cli"
    assert connect("h:1", tmp_path / "state", insecure=True).root_certificates is None


def test_json_after_log_noise_is_read(flwr: FakeFlwr, tmp_path: Path) -> None:
    """Banners and warnings before flwr's JSON are skipped; the JSON object is read."""
    flwr.answers({"success": True, "run-id": 12345}, noise="Loading... {not json}\n")
    assert Control("h:1", tmp_path / "home").submit(RunSettings(), tmp_path / "b") == 12345


def test_an_error_gives_flwr_s_last_line(flwr: FakeFlwr, tmp_path: Path) -> None:
    flwr.answers({"success": False, "error-message": "first\n[code: 16] Run ID not "
                  "found."}, code=1)
    with pytest.raises(FedfleetError, match=r"flwr stop failed against h:1: "
                       r"\[code: 16\] Run ID not found\.$"):
        Control("h:1", tmp_path / "home").stop(99)


def test_no_json_at_all_gives_stderr(flwr: FakeFlwr, tmp_path: Path) -> None:
    flwr.answers(None, stderr="Traceback...\nConnectionError: refused\n", code=1)
    with pytest.raises(FedfleetError, match="flwr ls failed against h:1: "
                       "ConnectionError: refused$"):
        Control("h:1", tmp_path / "home").runs()


def test_a_gateway_refusal_points_to_the_server_host(flwr: FakeFlwr,
                                                     tmp_path: Path) -> None:
    """403 means the admin command reached the device gateway, not the server."""
    flwr.answers({"success": False, "error-message": "HTTP 403 Forbidden"}, code=1)
    with pytest.raises(FedfleetError, match="refused 'flwr ls' \\(403\\): it is a "
                       "fedfleet gateway.*docker compose exec server fedfleet runs"):
        Control("gateway:8000", tmp_path / "home").runs()


def test_a_server_that_does_not_answer_is_a_bounded_wait(flwr: FakeFlwr,
                                                         tmp_path: Path) -> None:
    flwr.answers({"success": True, "runs": []}, sleep=5)
    with pytest.raises(FedfleetError, match="did not answer 'flwr ls' within 1s"):
        Control("h:1", tmp_path / "home", timeout=1).runs()


def test_a_missing_run_is_named(flwr: FakeFlwr, tmp_path: Path) -> None:
    flwr.answers({"success": True, "runs": []})
    with pytest.raises(FedfleetError, match="the server has no run 99"):
        Control("h:1", tmp_path / "home").run(99)


def test_submit_ships_the_bundle_and_returns_the_run_id(flwr: FakeFlwr,
                                                        tmp_path: Path) -> None:
    """The bundle carries the settings as run config; the run ID comes back."""
    flwr.answers({"success": True, "run-id": 4242})
    bundle = tmp_path / "bundle"
    run_id = Control("h:1", tmp_path / "home").submit(RunSettings(num_rounds=3), bundle)
    assert run_id == 4242
    assert flwr.calls()[0]["argv"] == ["run", str(bundle), "fedfleet", "--format", "json"]
    assert "num-rounds = 3" in (bundle / "pyproject.toml").read_text()
    assert os.path.exists(bundle / "fedfleet_app" / "client_app.py")


def test_a_simulation_run_ships_its_plan_and_federation_config(flwr: FakeFlwr,
                                                               tmp_path: Path) -> None:
    """A simulation run: the plan in the run config, the devices in --federation-config."""
    from fedfleet.server.host.control import Simulation

    flwr.answers({"success": True, "run-id": 4343})
    bundle = tmp_path / "bundle"
    simulation = Simulation(run_config={"simulation": '{"devices": 7}'},
                            federation_config={"num-supernodes": 7,
                                               "client-resources-num-cpus": 1,
                                               "client-resources-num-gpus": 0.5})
    run_id = Control("h:1", tmp_path / "home").submit(RunSettings(), bundle, simulation)
    assert run_id == 4343
    assert flwr.calls()[0]["argv"] == [
        "run", str(bundle), "fedfleet", "--federation-config",
        "num-supernodes=7 client-resources-num-cpus=1 client-resources-num-gpus=0.5",
        "--format", "json"]
    text = (bundle / "pyproject.toml").read_text()
    assert 'simulation = "{\\"devices\\": 7}"' in text
    assert "fedfleet.server.simulation" in (bundle / "fedfleet_app" / "client_app.py"
                                            ).read_text()
