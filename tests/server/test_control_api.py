"""Node calls in process: Flower's Control API client, one connection, bulk registration.

The SuperLink is a stand-in behind ``httpx.MockTransport`` (``fake_control``): the
requests are the real protobuf messages Flower's ``ControlHttpClient`` sends.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from fake_control import FakeControlApi

from fedfleet.server.host.certs import create_certificates
from fedfleet.server.host.control import Control, Registration
from fedfleet.server.host.control_api import ControlApiError, KeyInUse
from fedfleet.server.host.nodekeys import NodeKey, read_public_key
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.keys import create_node_key


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeControlApi:
    return FakeControlApi().install(monkeypatch)


def _keys(folder: Path, count: int) -> list[NodeKey]:
    folder.mkdir(exist_ok=True)
    keys = []
    for i in range(count):
        create_node_key(folder / f"edge-{i}")
        keys.append(NodeKey(folder / f"edge-{i}.pub", f"edge-{i}"))
    return keys


def test_many_keys_go_over_one_client_with_flower_s_messages(
        api: FakeControlApi, tmp_path: Path) -> None:
    """20 keys: one HTTP client, 20 register-node requests, 20 named nodes."""
    # Prepare
    keys = _keys(tmp_path / "keys", 20)
    seen: list[Registration] = []

    # Execute
    results = Control("127.0.0.1:8000", tmp_path / "home").register_nodes(
        keys, on_result=seen.append)

    # Assert
    assert [r.outcome for r in results] == ["registered"] * 20
    assert seen == results
    assert len(api.clients) == 1
    assert api.paths() == ["/v1/control/register-node"] * 20
    assert sorted(n.name for n in api.nodes.values()) == sorted(k.name or "" for k in keys)
    assert {r.node_id for r in results} == set(api.nodes)
    headers = api.requests[0].headers
    assert headers["content-type"] == "application/protobuf"
    assert headers["x-flwr-client"] == "cli"  # Flower's CLI interceptor
    assert headers["flwr-package-version"] == "1.42.0"  # runtime-version interceptor
    assert results[0].line() == (f"{keys[0].path}: registered node "
                                 f"{results[0].node_id} as edge-0")


def test_a_bad_key_among_many_is_refused_and_the_others_registered(
        api: FakeControlApi, tmp_path: Path) -> None:
    """The refused key's error names its file and says what is wrong."""
    keys = _keys(tmp_path / "keys", 4)
    bad = tmp_path / "keys" / "edge-2.pub"
    bad.write_text("hello, I am not a key\n")

    results = Control("h:1", tmp_path / "home").register_nodes(keys)

    assert [r.outcome for r in results] == ["registered", "registered", "refused",
                                            "registered"]
    assert results[2].error == (f"{bad}: not an OpenSSH public key (expected one line "
                                "'ecdsa-sha2-nistp384 AAAA...', as 'fedfleet node-key' "
                                "writes)")
    assert len(api.nodes) == 3
    assert results[2].line().startswith(f"refused {bad}: not an OpenSSH public key")


def test_a_key_registered_before_is_already(api: FakeControlApi, tmp_path: Path) -> None:
    """Flower's 'Public key already in use' (code 23) is an outcome, not a failure."""
    keys = _keys(tmp_path / "keys", 2)
    control = Control("h:1", tmp_path / "home")
    first = control.register_node(keys[0].path, "edge-0")

    results = control.register_nodes(keys)

    assert [(r.outcome, r.node_id) for r in results] == [("already", None),
                                                         ("registered", first + 1)]
    assert results[0].line() == f"{keys[0].path}: already registered (edge-0)"
    with pytest.raises(KeyInUse, match=r"refused: \[code: 23\] Public key already in use"):
        control.register_node(keys[0].path, "edge-0")


def test_a_superlink_that_goes_away_stops_the_batch_after_what_was_done(
        api: FakeControlApi, tmp_path: Path) -> None:
    """Keys done before the connection broke were reported; the error is one line."""
    keys = _keys(tmp_path / "keys", 5)
    api.refuse_after = 3
    seen: list[Registration] = []

    with pytest.raises(ControlApiError, match=r"^cannot register: the SuperLink at h:1 "
                       r"does not answer \(\[Errno 111\] Connection refused\)$"):
        Control("h:1", tmp_path / "home").register_nodes(keys, on_result=seen.append)

    assert [r.outcome for r in seen] == ["registered"] * 3
    assert len(api.nodes) == 3


def test_a_gateway_refusal_points_to_the_server_host(api: FakeControlApi,
                                                     tmp_path: Path) -> None:
    api.status = 403
    with pytest.raises(FedfleetError, match=r"gateway:8000 refused \(403\): it is a "
                       "fedfleet gateway.*docker compose exec server"):
        Control("gateway:8000", tmp_path / "home").nodes()


def test_another_http_error_is_one_line(api: FakeControlApi, tmp_path: Path) -> None:
    api.status = 502
    with pytest.raises(ControlApiError, match="^cannot list nodes: h:1 answered HTTP "
                       "502 Bad Gateway$"):
        Control("h:1", tmp_path / "home").nodes()


def test_list_and_revoke(api: FakeControlApi, tmp_path: Path) -> None:
    """Rows look like 'flwr supernode list --format json', with the device's name."""
    keys = _keys(tmp_path / "keys", 2)
    control = Control("h:1", tmp_path / "home")
    ids = [r.node_id for r in control.register_nodes(keys)]

    control.revoke_node(int(ids[0] or 0))
    rows = control.nodes()

    assert [(row["node-id"], row["name"], row["status"]) for row in rows] == [
        (str(ids[0]), "edge-0", "unregistered"), (str(ids[1]), "edge-1", "registered")]
    assert rows[1]["online-at"] == "N/A"
    assert rows[0]["deleted-at"].endswith("Z") and " " in rows[0]["deleted-at"]
    with pytest.raises(ControlApiError, match=r"\[code: 24\] Node not found"):
        control.revoke_node(1)


def test_tls_trusts_exactly_the_given_ca(api: FakeControlApi, tmp_path: Path) -> None:
    """Over TLS with a CA, the client verifies with that CA (and the host name)."""
    paths = create_certificates(tmp_path / "certs", [])
    keys = _keys(tmp_path / "keys", 1)

    Control("127.0.0.1:8000", tmp_path / "home", insecure=False,
            root_certificates=paths.ca_cert).register_nodes(keys)

    verify = api.clients[0]["verify"]
    assert isinstance(verify, ssl.SSLContext)
    assert verify.check_hostname and verify.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in verify.get_ca_certs()] == [
        c["subject"] for c in ssl.create_default_context(
            cafile=str(paths.ca_cert)).get_ca_certs()]
    assert str(api.requests[0].url).startswith("https://127.0.0.1:8000/")


def test_insecure_and_system_trust(api: FakeControlApi, tmp_path: Path) -> None:
    Control("h:1", tmp_path / "home", insecure=True).nodes()
    Control("h:1", tmp_path / "home", insecure=False).nodes()
    assert [c["verify"] for c in api.clients] == [False, True]
    assert [r.url.scheme for r in api.requests] == ["http", "https"]


def test_an_unreadable_ca_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(ControlApiError, match="cannot read the CA certificate "
                       ".*missing.crt: No such file"):
        Control("h:1", tmp_path, insecure=False,
                root_certificates=tmp_path / "missing.crt").nodes()
    with pytest.raises(ControlApiError, match="cannot read the CA certificate .*ca.crt"):
        Control("h:1", tmp_path, insecure=False,
                root_certificates=tmp_path / "ca.crt").nodes()


def test_the_request_carries_the_key_as_flower_sends_it(api: FakeControlApi,
                                                        tmp_path: Path) -> None:
    """PEM SubjectPublicKeyInfo, as 'flwr supernode register' converts it."""
    from flwr.proto.control_pb2 import RegisterNodeRequest

    keys = _keys(tmp_path / "keys", 1)
    Control("h:1", tmp_path / "home").register_node(keys[0].path, "edge-0")
    sent = RegisterNodeRequest.FromString(api.requests[0].content)
    assert sent.public_key == read_public_key(keys[0].path)
    assert sent.public_key.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sent.name == "edge-0"
