"""A second Docker daemon in its own network namespace: the "remote device" of the fleet tests.

The namespace is joined to the host by a veth pair (host side .1, device side .2 of a
/24 chosen per test session). Inside it run a dockerd (own data root, exec root,
pidfile and socket; ``--tlsverify`` on tcp://.2:2376 with certificates made here;
``--bridge=none``, no iptables) and, on request, an sshd that accepts one key and
sends ``docker system dial-stdio`` to that daemon. Everything is torn down by
:meth:`RemoteDevice.close`, in bounded time.
"""

from __future__ import annotations

import datetime
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfleet.server.host.certs import create_certificates


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command; raise with its output when it fails and ``check``."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def client_certificate(ca_cert: Path, ca_key: Path, out: Path, name: str = "operator"
                       ) -> tuple[Path, Path]:
    """Write a TLS client certificate (clientAuth) signed by the CA; return (cert, key)."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(out / "key.pem", 0o600)
    return out / "cert.pem", out / "key.pem"


class RemoteDevice:
    """A dockerd (and optionally sshd) in a fresh network namespace."""

    def __init__(self, tmpfs_size: str | None = None, tcp: bool = True) -> None:
        """Pick names and addresses; :meth:`start` creates it all."""
        tag = f"{os.getpid() % 1000:03d}{random.randrange(100):02d}"
        self.netns = f"fft-{tag}"
        self.veth_host, self.veth_device = f"ffh{tag}", f"ffd{tag}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.host_ip, self.ip = f"{self.subnet}.1", f"{self.subnet}.2"
        # Short: a Unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ffleet-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.tmpfs_size = tmpfs_size
        self.tcp = tcp
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[bytes] | None = None
        self.tls = self.root / "tls"
        self.operator_tls: tuple[Path, Path, Path] | None = None  # ca, cert, key
        self.ssh_key = self.root / "ssh" / "operator"
        self.known_hosts = self.root / "ssh" / "known_hosts"
        self._netns_made = False

    @property
    def endpoint(self) -> str:
        """Return the daemon's TLS endpoint."""
        return f"tcp://{self.ip}:2376"

    @property
    def unix(self) -> str:
        """Return the daemon's local socket URL."""
        return f"unix://{self.socket}"

    def _in_ns(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd]

    def start(self, timeout: float = 90) -> RemoteDevice:
        """Create the namespace and veth pair and start dockerd; wait until it answers."""
        sh("ip", "netns", "add", self.netns)
        self._netns_made = True
        sh("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name",
           self.veth_device)
        sh("ip", "link", "set", self.veth_device, "netns", self.netns)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.veth_host)
        sh("ip", "link", "set", self.veth_host, "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.ip}/24", "dev", self.veth_device)
        sh("ip", "-n", self.netns, "link", "set", self.veth_device, "up")
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        data = self.root / "data"
        data.mkdir()
        if self.tmpfs_size:
            sh("mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_size}", "tmpfs", str(data))
        cmd = ["dockerd", "--data-root", str(data), "--exec-root", str(self.root / "exec"),
               "--pidfile", str(self.root / "docker.pid"), "-H", self.unix,
               "--bridge=none", "--iptables=false", "--ip6tables=false"]
        if self.tcp:
            paths = create_certificates(self.tls, [self.ip], defaults=False)
            cert, key = client_certificate(paths.ca_cert, paths.ca_key, self.root / "operator")
            self.operator_tls = (paths.ca_cert, cert, key)
            cmd += ["-H", f"tcp://{self.ip}:2376", "--tlsverify",
                    "--tlscacert", str(paths.ca_cert), "--tlscert", str(paths.server_cert),
                    "--tlskey", str(paths.server_key)]
        log = (self.root / "dockerd.log").open("wb")
        self.dockerd = subprocess.Popen(self._in_ns(*cmd), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.DockerClient(base_url=self.unix, timeout=5)
                client.ping()
                client.close()
                return self
            except Exception:  # not up yet
                if self.dockerd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dockerd did not start: " + self.log()[-2000:]) from None
                time.sleep(0.5)

    def client(self) -> docker.DockerClient:
        """Return a client on the daemon's local socket (the test's own view)."""
        return docker.DockerClient(base_url=self.unix, timeout=120)

    def log(self) -> str:
        """Return dockerd's log."""
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_sshd(self) -> None:
        """Start sshd on .2:22 in the namespace: key auth only, DOCKER_HOST=this daemon."""
        ssh_dir = self.root / "ssh"
        ssh_dir.mkdir()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "host_key"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key))
        shutil.copy(f"{self.ssh_key}.pub", ssh_dir / "authorized_keys")
        host_pub = (ssh_dir / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"{self.ip} {' '.join(host_pub)}\n")
        config = ssh_dir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.ip}", "Port 22", f"HostKey {ssh_dir / 'host_key'}",
            f"PidFile {ssh_dir / 'sshd.pid'}", f"AuthorizedKeysFile {ssh_dir}/authorized_keys",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
            f"SetEnv DOCKER_HOST={self.unix}", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        log = (ssh_dir / "sshd.log").open("wb")
        self.sshd = subprocess.Popen(self._in_ns("/usr/sbin/sshd", "-D", "-e", "-f", str(config)),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while sh(*self._in_ns("bash", "-c", f"exec 3<>/dev/tcp/{self.ip}/22"),
                 check=False).returncode != 0:
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: " + (ssh_dir / "sshd.log").read_text())
            time.sleep(0.3)

    def close(self) -> None:
        """Stop sshd and dockerd (and its containers), unmount, delete namespace and files."""
        for proc in (self.sshd, self.dockerd):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # dockerd stops its containers first
                try:
                    proc.wait(timeout=45)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            try:  # its containerd and anything else left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Mounts dockerd left behind (it runs in the host's mount namespace).
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            sh("umount", "-l", mount, check=False)
        if self._netns_made:
            sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.veth_host, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
