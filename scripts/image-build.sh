#!/usr/bin/env bash
# npm run image:build: the committed Dockerfile into book-completion-webhook:latest, with podman or
# docker (whichever runs here), in Docker's image format (OCI has no HEALTHCHECK). Where the official
# bases cannot be pulled, stand-ins are built first from .ci/images/ (cached by their recipe's hash).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=book-completion-webhook:latest
usage () {
  cat <<'HELP'
usage: npm run image:build [-- --tag NAME] [--engine podman|docker] [--quiet]

Builds ./Dockerfile as is into book-completion-webhook:latest (or --tag NAME), with podman
(--format docker, so the HEALTHCHECK is kept) or docker, whichever works here (BCW_ENGINE picks).
Base images missing locally are pulled, else built from .ci/images/ (no registry on this network).
HELP
}
quiet=
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --engine) BCW_ENGINE=${2:?--engine needs podman or docker}; shift 2 ;;
    --quiet) quiet=1; shift ;;
    *) echo "image:build: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

# The engine: podman when installed, docker when its daemon answers (a docker client alone is not enough).
engine=${BCW_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null && podman version >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then engine=docker
  fi
fi
if [ -z "$engine" ] || ! command -v "$engine" >/dev/null; then
  echo "image:build: no container engine here: install podman (Debian: sudo .ci/install-engine.sh) or start docker" >&2
  exit 1
fi
say () { echo "image:build: $*" >&2; }

# One build at a time (test files, helpers and CI may ask at once): the others wait, then find it cached.
cache=${BCW_CI_CACHE:-$([ "$(id -u)" -eq 0 ] && echo /var/cache/bcw-ci || echo "${XDG_CACHE_HOME:-$HOME/.cache}/bcw-ci")}
mkdir -p "$cache"
export BCW_CI_CACHE=$cache
exec 9>"$cache/image-build.lock"
flock 9

started=$SECONDS
bases=$(sed -nE 's/^FROM[[:space:]]+([^[:space:]]+).*/\1/ip' Dockerfile | sort -u)
say "$engine; bases: $(echo "$bases" | tr '\n' ' ')"
# shellcheck disable=SC2086
.ci/images/standins.sh "$engine" $bases

format=()
[ "$engine" = podman ] && format=(--format docker)
say "building Dockerfile into $tag"
log=$(mktemp)
if ! "$engine" build "${format[@]}" -t "$tag" -f Dockerfile . >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "image:build: $engine build failed (its last lines above)" >&2
  rm -f "$log"
  exit 1
fi
[ -n "$quiet" ] || grep -E '(^| )(STEP|Step) [0-9]' "$log" >&2 || true
rm -f "$log"
size=$("$engine" image inspect --format '{{.Size}}' "$tag")
say "$tag built in $((SECONDS - started)) s ($((size / 1000000)) MB)"
