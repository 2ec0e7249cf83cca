#!/usr/bin/env bash
# Prepare the compose dev stack: choose free host ports and generate dev credentials into .env.local.
# Run with --help for the details. Idempotent: a second run keeps the ports and the password it chose.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/dev_up.sh [--env-file PATH] [--any-port] [--kind-secrets] [--quiet] [--help]

Chooses a free host port for every published service of compose/docker-compose.yml and writes them,
with generated dev credentials, to .env.local (gitignored). Then start the stack with
  docker compose --env-file .env.local -f compose/docker-compose.yml up -d --build --wait

Ports (variable, preferred default):
  SOMABRAIN_HOST_PORT 9696   REDIS_HOST_PORT 6379     KAFKA_HOST_PORT 9092   PROMETHEUS_HOST_PORT 9090
  POSTGRES_HOST_PORT 15432   OPA_HOST_PORT 8181       SOMAMEMORY_HOST_PORT 9595
  INGRESS_HOST_PORT 9999 (the TLS front, https://somabrain.internal)
A port chosen by an earlier run is kept while it is free; otherwise the default; otherwise any free
port. All ports are reserved (bound on 127.0.0.1) at the same time before any is released, so two
services never get the same port.

Credentials (generated once, then kept): POSTGRES_USER/POSTGRES_PASSWORD (the Postgres superuser, which only
Postgres and the one-shot sb_dbinit see), POSTGRES_DB, POSTGRES_APP_USER/POSTGRES_APP_PASSWORD (the apps'
runtime role, DML only, created by sb_dbinit), SOMABRAIN_MEMORY_TOKEN (SomaMemory's service token).

Options:
  --env-file PATH   file to write (default: <repo>/.env.local)
  --any-port        if 9696 is taken, use another port for the API instead of failing
  --kind-secrets    also write a dev JWT key pair to .run/jwt/ (jwt_priv.pem, kept once made, and
                    jwt_pub.pem), for the dev cluster's Secrets: the Tiltfile then runs
                    scripts/k8s_secrets.sh --from-env-file .env.local --jwt-public-key .run/jwt/jwt_pub.pem
                    (the same Postgres credentials as compose)
  --quiet           print nothing on success
  --help            show this help

Environment:
  COMPOSE_PROJECT_NAME  the compose project to write on a first run (default somabrain), e.g. to run a second
                        stack beside the first; a later run keeps the one in the file

Exit status: 0 written; 1 port 9696 is taken (and no --any-port); 2 bad usage or missing tool.
USAGE
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_file="$root/.env.local"
any_port=0
kind_secrets=0
quiet=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --any-port) any_port=1 ;;
    --kind-secrets) kind_secrets=1 ;;
    --quiet) quiet=1 ;;
    --env-file)
      [[ $# -ge 2 ]] || { echo "dev_up.sh: --env-file needs a path" >&2; exit 2; }
      env_file="$2"; shift ;;
    --env-file=*) env_file="${1#--env-file=}" ;;
    *) echo "dev_up.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v python3 >/dev/null || { echo "dev_up.sh: python3 is required" >&2; exit 2; }

# One python3 process reads the previous file, reserves every port at once and writes the new file
# atomically (mode 600). Unknown keys in an existing file are kept.
ANY_PORT="$any_port" QUIET="$quiet" python3 - "$env_file" <<'PY'
import os
import secrets
import socket
import sys
import tempfile

env_file = sys.argv[1]
any_port = os.environ["ANY_PORT"] == "1"
quiet = os.environ["QUIET"] == "1"
HOST = "127.0.0.1"
PORTS = [  # (variable, default): the API first, so it gets first pick of its default
    ("SOMABRAIN_HOST_PORT", 9696),
    ("REDIS_HOST_PORT", 6379),
    ("KAFKA_HOST_PORT", 9092),
    ("PROMETHEUS_HOST_PORT", 9090),
    ("POSTGRES_HOST_PORT", 15432),
    ("OPA_HOST_PORT", 8181),
    ("SOMAMEMORY_HOST_PORT", 9595),
    ("INGRESS_HOST_PORT", 9999),
]
MANAGED = ["COMPOSE_PROJECT_NAME", *(name for name, _ in PORTS), "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
           "POSTGRES_APP_USER", "POSTGRES_APP_PASSWORD", "SOMABRAIN_MEMORY_TOKEN"]


def read_env(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    values[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return values


def answered(port: int) -> bool:
    """Something answers on the port although nothing may listen here: the local cluster's ingress is a DNAT
    (hostPort 127.0.0.1:9999), which a bind does not see, and which would take the compose front's traffic."""
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def try_bind(port: int) -> socket.socket | None:
    if answered(port):
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Same semantics as Docker's port publishing: TIME_WAIT leftovers do not count, a listener does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(1)
    except OSError:
        sock.close()
        return None
    return sock


previous = read_env(env_file)
held: list[socket.socket] = []
chosen: dict[str, int] = {}
notes: list[str] = []
try:
    for name, default in PORTS:
        candidates: list[int] = []
        old = previous.get(name, "")
        if old.isdigit() and 0 < int(old) < 65536 and (name != "SOMABRAIN_HOST_PORT" or any_port):
            candidates.append(int(old))
        candidates.append(default)
        if name != "SOMABRAIN_HOST_PORT" or any_port:
            candidates.append(0)  # 0: the kernel picks a free port (distinct from the ones we hold)
        for port in candidates:
            sock = try_bind(port)
            if sock is not None:
                held.append(sock)
                chosen[name] = sock.getsockname()[1]
                break
        else:
            print(
                f"dev_up.sh: port {default} ({name}) on {HOST} is already in use. Stop whatever listens "
                f"there (e.g. `ss -ltnp 'sport = :{default}'`), or run with --any-port to use another port.",
                file=sys.stderr,
            )
            sys.exit(1)
        if chosen[name] != default:
            notes.append(f"{name}={chosen[name]} (default {default} is taken)")
finally:
    for sock in held:  # released only now: every port was held at the same time
        sock.close()

password = previous.get("POSTGRES_PASSWORD") or secrets.token_hex(16)  # hex: safe inside a DSN
values = {
    "COMPOSE_PROJECT_NAME": previous.get("COMPOSE_PROJECT_NAME") or os.environ.get("COMPOSE_PROJECT_NAME") or "somabrain",
    **{name: str(port) for name, port in chosen.items()},
    "POSTGRES_USER": previous.get("POSTGRES_USER") or "somabrain",
    "POSTGRES_PASSWORD": password,
    "POSTGRES_DB": previous.get("POSTGRES_DB") or "somabrain",
    # The apps' runtime role (DML only), which the sb_dbinit service creates; POSTGRES_USER is the superuser.
    "POSTGRES_APP_USER": previous.get("POSTGRES_APP_USER") or "somabrain_app",
    "POSTGRES_APP_PASSWORD": previous.get("POSTGRES_APP_PASSWORD") or secrets.token_hex(16),
    # The service token SomaMemory requires of the API (brain/somamemory/access.py); kept once made.
    "SOMABRAIN_MEMORY_TOKEN": previous.get("SOMABRAIN_MEMORY_TOKEN") or secrets.token_hex(32),
}
lines = [
    "# Generated by scripts/dev_up.sh: host ports and dev credentials for compose/docker-compose.yml.",
    "# Never commit this file. Re-running the script keeps these values while the ports are free.",
    *(f"{key}={values[key]}" for key in MANAGED),
]
extra = {k: v for k, v in previous.items() if k not in MANAGED}
if extra:
    lines.append("# Kept from the previous file:")
    lines.extend(f"{k}={v}" for k, v in extra.items())
content = "\n".join(lines) + "\n"

directory = os.path.dirname(os.path.abspath(env_file))
os.makedirs(directory, exist_ok=True)
fd, tmp = tempfile.mkstemp(prefix=".env.local.", dir=directory)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    fh.write(content)
os.chmod(tmp, 0o600)
os.replace(tmp, env_file)

if not quiet:
    print(f"dev_up.sh: wrote {env_file}")
    for name, _ in PORTS:
        print(f"  {name}={values[name]}")
    for note in notes:
        print(f"  note: {note}")
PY

if [[ "$kind_secrets" == 1 ]]; then
  command -v openssl >/dev/null || { echo "dev_up.sh: --kind-secrets needs openssl" >&2; exit 2; }
  jwt_dir="$root/.run/jwt"
  mkdir -p "$jwt_dir"
  if [[ ! -s "$jwt_dir/jwt_priv.pem" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$jwt_dir/jwt_priv.pem" 2>/dev/null
    chmod 600 "$jwt_dir/jwt_priv.pem"
  fi
  openssl pkey -in "$jwt_dir/jwt_priv.pem" -pubout -out "$jwt_dir/jwt_pub.pem" 2>/dev/null
  # Written here by earlier versions, which rendered the kind overlay's Secrets from it: dev credentials that
  # nothing reads any more.
  rm -rf "$root/k8s/overlays/kind/secrets"
  [[ "$quiet" == 1 ]] || echo "dev_up.sh: wrote $jwt_dir/{jwt_priv.pem,jwt_pub.pem} (the Postgres credentials are in $env_file)"
fi
