#!/usr/bin/env bash
# Installs what the image and compose tests need on a fresh Debian 12 machine, as root: podman with
# runc, debootstrap (for the stand-in bases, .ci/images/), Docker Compose v2 and a podman API socket
# for it. Idempotent: a second run only checks. Prints where compose and the socket are.
#
#   .ci/install-engine.sh            install (or check) everything
#   .ci/install-engine.sh --env      print the environment lines to use compose (eval "$(…)")
#
# Environment: BCW_CI_CACHE (default /var/cache/bcw-ci) holds the compose binary;
# BCW_PODMAN_SOCKET (default /run/bcw-podman/podman.sock) the API socket.
set -euo pipefail

cache=${BCW_CI_CACHE:-/var/cache/bcw-ci}
socket=${BCW_PODMAN_SOCKET:-/run/bcw-podman/podman.sock}
# Debian 13's docker-compose package: Compose v2 (bookworm's 1.29.2 rejects the file's top-level `name:`).
compose_version=2.26.1
compose_dir="$cache/compose-$compose_version"
compose="$compose_dir/usr/libexec/docker/cli-plugins/docker-compose"

print_env () {
  echo "export DOCKER_HOST=unix://$socket"
  # BuildKit's own image cannot be pulled here: compose builds through the classic API (podman's).
  echo "export DOCKER_BUILDKIT=0"
  echo "export BCW_COMPOSE=$compose"
}
case "${1:-}" in
  --env) print_env; exit 0 ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "install-engine.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

say () { echo "install-engine: $*"; }
[ "$(id -u)" -eq 0 ] || { echo "install-engine.sh: run as root (apt-get, /etc/containers)" >&2; exit 1; }

# 1. podman with runc (cgroup v1 here), netavark + aardvark-dns for compose's network and its
#    service names, iptables for published ports, debootstrap for the stand-in bases.
#    catatonit: the pause process of a pod's infra container, without which `podman kube play`
#    (test/kubernetes-run.test.ts) fails (podman only recommends it).
packages=(podman runc netavark aardvark-dns iptables debootstrap catatonit)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Without lower limits every container fails with "error setting rlimits … rlimit type 7"
#    (then 6) under runc here; runc, not crun, is the runtime that works.
conf=/etc/containers/containers.conf
if ! grep -qs 'bcw-ci' "$conf"; then
  say "writing $conf (runc, lower default ulimits)"
  mkdir -p /etc/containers
  cat >"$conf" <<'EOF'
# Written by .ci/install-engine.sh (bcw-ci): the runtime and the limits that work on this machine.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
EOF
fi

# 3. Docker Compose v2 from Debian 13's docker-compose package, unpacked into the cache: a private
#    apt configuration that knows only trixie, so the machine's own sources and pins stay as they are.
if [ ! -x "$compose" ]; then
  say "fetching docker-compose $compose_version (Debian trixie) into $compose_dir"
  apt_dir="$cache/apt-trixie"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc/preferences.d" "$apt_dir/etc/sources.list.d"
  mirror=$(grep -rhoE 'https?://deb\.debian\.org/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n 1 || true)
  cat >"$apt_dir/etc/trixie.sources" <<EOF
Types: deb
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
    -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::State::status=/dev/null"
    -o "APT::Architecture=amd64" -o "APT::Architectures=amd64")
  mv "$apt_dir/etc/trixie.sources" "$apt_dir/etc/sources.list.d/trixie.sources"
  apt-get "${apt_opts[@]}" update -qq
  work=$(mktemp -d)
  (cd "$work" && apt-get "${apt_opts[@]}" download -qq "docker-compose=$compose_version*")
  rm -rf "$compose_dir.tmp" && mkdir -p "$compose_dir.tmp"
  dpkg -x "$work"/docker-compose_*.deb "$compose_dir.tmp"
  rm -rf "$work" "$compose_dir" && mv "$compose_dir.tmp" "$compose_dir"
fi
"$compose" version >/dev/null

# 4. Podman's Docker-compatible API for compose, kept running (no systemd socket unit here).
if ! curl -sf --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; then
  say "starting podman system service on $socket"
  mkdir -p "$(dirname "$socket")"
  rm -f "$socket"
  setsid nohup podman system service --time=0 "unix://$socket" >"$(dirname "$socket")/service.log" 2>&1 </dev/null &
  echo $! >"$(dirname "$socket")/service.pid"
  for _ in $(seq 1 50); do curl -sf --unix-socket "$socket" http://d/_ping >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf --unix-socket "$socket" http://d/_ping >/dev/null || { echo "install-engine.sh: podman system service did not answer on $socket" >&2; exit 1; }
fi

say "podman $(podman version --format '{{.Client.Version}}'), runc, compose $("$compose" version --short), socket $socket"
