"""Channels: turn an inventory endpoint into a ``docker.DockerClient`` that answers.

The engine never sees how a client reaches its daemon. Three direct channels:

- ``unix://`` (and ``local``: this machine's Docker, as the docker CLI would reach it);
- ``tcp://HOST:PORT`` with mutual TLS (the daemon runs ``--tlsverify``). The
  environment's ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` would replace the inventory's
  CA inside ``requests``, so the session ignores the environment;
- ``ssh://[USER@]HOST[:PORT]``: the ``ssh`` client runs ``docker system dial-stdio``
  on the device (like ``docker -H ssh://``), in batch mode (never a password or
  host-key prompt), with the inventory's identity, known_hosts and options on top of
  ~/.ssh/config. The device needs the docker CLI. ssh's own error (e.g.
  ``Permission denied (publickey)``) is kept for the message.
"""

from __future__ import annotations

import collections
import io
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.tls
import requests
import urllib3
import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter

from fedfleet.server.fleet.specs import Endpoint, SshOptions
from fedfleet.shared.errors import FedfleetError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

API_FLOOR = "1.24"
"""API version used only for the first ``/version`` call; then the daemon's own."""

SSH_CONNECT_TIMEOUT = 10


class ChannelError(FedfleetError):
    """The device's Docker API cannot be reached or refused us."""


def connect(endpoint: Endpoint, timeout: float = 60.0) -> docker.DockerClient:
    """Return a client for ``endpoint`` that has answered ``/version``.

    Raises
    ------
    ChannelError
        With the reason in the channel's terms (refused, TLS, ssh's own message).
    """
    probe = _build(endpoint, API_FLOOR, timeout)
    try:
        version = probe.api.version(api_version=False)
    except Exception as err:  # every failure becomes one line
        raise ChannelError(explain(endpoint, err, probe)) from None
    finally:
        probe.close()
    api = min(str(version.get("ApiVersion", API_FLOOR)),
              docker.constants.DEFAULT_DOCKER_API_VERSION, key=_version_key)
    return _build(endpoint, api, timeout)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _build(endpoint: Endpoint, version: str, timeout: float) -> docker.DockerClient:
    """Make the client without talking to the daemon yet."""
    scheme = endpoint.scheme
    if scheme == "local":
        client = docker.DockerClient.from_env(version=version, timeout=int(timeout))
    elif scheme == "unix":
        client = docker.DockerClient(base_url=endpoint.url, version=version,
                                     timeout=int(timeout))
    elif scheme == "tcp":
        tls = None
        if endpoint.tls is not None:
            tls = docker.tls.TLSConfig(
                client_cert=(str(endpoint.tls.cert), str(endpoint.tls.key)),
                ca_cert=str(endpoint.tls.ca), verify=True)
        client = docker.DockerClient(base_url=endpoint.url, version=version, tls=tls,
                                     timeout=int(timeout))
    elif scheme == "ssh":
        # A plain HTTP client whose transport is replaced by ssh + dial-stdio.
        client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version=version,
                                     timeout=int(timeout))
        adapter = SshAdapter(ssh_command(endpoint.url, endpoint.ssh or SshOptions()),
                             timeout)
        client.api.mount("http+docker://ssh", adapter)
        client.api.base_url = "http+docker://ssh"
        client.api._custom_adapter = adapter  # closed with the client
    else:  # pragma: no cover - the inventory rejects other schemes
        raise ChannelError(f"{endpoint.url}: unknown endpoint scheme")
    client.api.trust_env = False  # REQUESTS_CA_BUNDLE must not replace the inventory's CA
    return client


def ssh_command(url: str, options: SshOptions) -> list[str]:
    """Return the ``ssh`` command that connects stdio to the device's Docker daemon."""
    target = url.removeprefix("ssh://")
    user, _, hostport = target.rpartition("@")
    host, _, port = hostport.partition(":")
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
           "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
    if options.config is not None:
        cmd += ["-F", str(options.config)]
    if options.identity is not None:
        cmd += ["-i", str(options.identity), "-o", "IdentitiesOnly=yes"]
    if options.known_hosts is not None:
        cmd += ["-o", f"UserKnownHostsFile={options.known_hosts}",
                "-o", "StrictHostKeyChecking=yes"]
    for option in options.options:
        cmd += ["-o", option]
    if user:
        cmd += ["-l", user]
    if port:
        cmd += ["-p", port]
    return [*cmd, "--", host, "docker", "system", "dial-stdio"]


def explain(endpoint: Endpoint, err: BaseException, client: docker.DockerClient | None = None
            ) -> str:
    """Say in one line why ``endpoint`` did not answer, and what to check."""
    where = endpoint.url
    adapter = getattr(client.api, "_custom_adapter", None) if client is not None else None
    if isinstance(adapter, SshAdapter):
        adapter.settle()  # let ssh finish saying why before reading it
    if isinstance(adapter, SshAdapter) and adapter.errors:
        last = adapter.errors[-1]
        hint = ""
        if "Permission denied" in last:
            hint = ": check ssh.identity (or your ssh agent) and the user's authorized_keys"
        elif "Host key verification failed" in last or "No ED25519 host key" in last:
            hint = ": add the device's host key to known_hosts (ssh.known_hosts)"
        elif "docker" in last and ("not found" in last or "No such file" in last):
            hint = ": the device needs the docker CLI for ssh:// (apt install docker.io)"
        return f"cannot reach Docker at {where} over ssh: {last}{hint}"
    text = str(err)
    if isinstance(err, requests.exceptions.SSLError) or "SSL" in text or "certificate" in text:
        reason = _tls_reason(text)
        return (f"TLS with the Docker API at {where} failed ({reason}): check tls.ca (the "
                "CA that signed the daemon's certificate) and tls.cert/tls.key (a client "
                "certificate signed by the CA the daemon trusts)")
    if isinstance(err, requests.exceptions.ConnectTimeout) or "timed out" in text:
        return f"no answer from the Docker API at {where} (timed out): is the device on " \
               "and the port open?"
    if isinstance(err, requests.exceptions.ConnectionError) or "Connection refused" in text \
            or "No such file" in text:
        detail = "connection refused" if "refused" in text else \
            "no such socket" if "No such file" in text else text.splitlines()[0][:200]
        return f"cannot reach the Docker API at {where} ({detail}): is dockerd running " \
               "and listening there?"
    if isinstance(err, docker.errors.APIError):
        return f"the Docker API at {where} answered with an error: {err.explanation or err}"
    return f"cannot use the Docker API at {where}: {text.splitlines()[0] if text else err!r}"


def _tls_reason(text: str) -> str:
    text = re.sub(r" \(_ssl\.c:\d+\)", "", text)
    for marker in ("certificate verify failed", "unknown ca", "bad certificate",
                   "certificate required", "handshake failure", "wrong version number",
                   "key values mismatch", "PEM lib"):
        if marker in text.lower() or marker in text:
            start = text.lower().find(marker.lower())
            return text[start:].split(")")[0].split("'")[0].strip()
    return text.splitlines()[0][:160] if text else "unknown error"


class _SshSocket(socket.socket):
    """One ``ssh ... docker system dial-stdio`` process, used as a socket.

    It is a (never connected) socket object like docker's own ssh transport, so that
    docker's raw-stream readers, which poll a socket before reading, go straight on to
    :meth:`recv`, which reads the ssh process's output.
    """

    def __init__(self, command: list[str], errors: collections.deque[str],
                 on_error: Callable[[str], None]) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.command = command
        self.errors = errors
        self.on_error = on_error
        self.proc: subprocess.Popen[bytes] | None = None
        self.drain: threading.Thread | None = None

    def connect(self, address: object = None, /) -> None:
        """Start the ssh process (``address`` is unused: the command says where)."""
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, start_new_session=True)
        self.drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self.drain.start()

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self.on_error(line)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        """Write all of ``data`` to the ssh process."""
        self.send(data)

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        """Write ``data`` to the ssh process; return how many bytes."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            written = self.proc.stdin.write(bytes(data))
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as err:
            raise ConnectionError(f"ssh exited: {self.last_error()}") from err
        return written

    def recv(self, size: int, flags: int = 0) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        return os.read(self.proc.stdout.fileno(), size)

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        """Return a reader for one HTTP response; closing it keeps the connection."""
        if self.proc is None:
            self.connect()
        return _ResponseReader(self)

    def last_error(self) -> str:
        return self.errors[-1] if self.errors else "no output"

    def close(self) -> None:
        super().close()
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _ResponseReader(io.BufferedReader):
    """A buffered reader of the ssh process's output that names its socket.

    docker's raw-stream code looks for the socket as ``response.raw._fp.fp.channel``.
    """

    def __init__(self, channel: _SshSocket) -> None:
        super().__init__(_PipeReader(channel))
        self.channel = channel


class _PipeReader(io.RawIOBase):
    """The ssh process's output as a raw stream, like ``socket.SocketIO``."""

    def __init__(self, sock: _SshSocket) -> None:
        super().__init__()
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.sock.recv(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _SshConnection(urllib3.connection.HTTPConnection):
    def __init__(self, adapter: SshAdapter, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.adapter = adapter

    def connect(self) -> None:
        sock = _SshSocket(self.adapter.command, self.adapter.errors, self.adapter.errors.append)
        sock.connect()
        self.adapter.sockets.append(sock)
        self.sock = sock


class _SshPool(urllib3.connectionpool.HTTPConnectionPool):
    scheme = "ssh"

    def __init__(self, adapter: SshAdapter, timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self.adapter = adapter
        self._conn_timeout = timeout

    def _new_conn(self) -> _SshConnection:
        return _SshConnection(self.adapter, self._conn_timeout)

    def _get_conn(self, timeout: float | None = None) -> Any:
        # urllib3 would poll the idle connection's file descriptor to see whether it
        # dropped; a pipe does not answer that like a socket, so reuse it as it is.
        conn = None
        try:
            assert self.pool is not None
            conn = self.pool.get(block=False)
        except Exception:  # empty or closed pool: make a new one
            conn = None
        if conn is not None and conn.sock is not None and \
                conn.sock.proc is not None and conn.sock.proc.poll() is not None:
            conn.close()
            conn = None
        return conn or self._new_conn()


class SshAdapter(BaseHTTPAdapter):  # type: ignore[misc]  # docker ships no type hints
    """``requests`` transport: HTTP to the device's Docker over ssh + dial-stdio."""

    def __init__(self, command: list[str], timeout: float, maxsize: int = 4) -> None:
        """Remember the ssh command; processes start on first use."""
        super().__init__()
        self.command = command
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self.sockets: list[_SshSocket] = []
        self._pool = _SshPool(self, timeout, maxsize)

    def settle(self, timeout: float = 3.0) -> None:
        """Wait (briefly) for ssh processes that are exiting, and for their messages."""
        for sock in list(self.sockets):
            if sock.proc is None:
                continue
            try:
                sock.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue  # still connected: not the one that failed
            if sock.drain is not None:
                sock.drain.join(timeout=1.0)

    def get_connection(self, url: str, proxies: Any = None) -> _SshPool:
        """Return the one pool of ssh connections."""
        return self._pool

    def close(self) -> None:
        """End every ssh process."""
        super().close()
        self._pool.close()


def close_quietly(client: docker.DockerClient | None) -> None:
    """Close ``client`` and its connections, ignoring errors."""
    if client is None:
        return
    try:
        client.close()
    except Exception:  # closing must not mask the real outcome
        pass
