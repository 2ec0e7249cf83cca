#!/usr/bin/env bash
# Create the Secrets that the SomaBrain manifests reference but never ship (somabrain-postgres,
# somabrain-postgres-app, somabrain-secrets, somabrain-memory-token).
# Run with --help for the details. Idempotent: creates what is missing, keeps what exists unless --force.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/k8s_secrets.sh --context CONTEXT [--namespace NS] [--from-env-file FILE]
                              [--jwt-public-key FILE] [--kubeconfig FILE] [--force] [--dry-run] [--quiet]

Creates, in namespace NS of the cluster of kubeconfig context CONTEXT, the Secrets that k8s/ refers to but
does not contain (so that `kubectl apply -k k8s/` never overwrites real credentials with placeholders):

  somabrain-postgres      POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB  (the superuser: Postgres and the
                          db-init initContainers only)
  somabrain-postgres-app  POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB  (the apps' runtime role, DML only;
                          db-init creates it and sets this password at every start)
  somabrain-secrets   jwt_pub.pem                                     (the key that verifies the API's JWTs)
  somabrain-memory-token  token (random)           (the service token SomaMemory requires; only the API holds it)

Run it before the first `kubectl apply -k k8s/` (the Tiltfile runs it before every deploy). The namespace is
created when it does not exist. A Secret that exists is kept as it is, its values never read or printed,
unless --force replaces it.

Options:
  --context CONTEXT      kubeconfig context of the cluster (required: never the current context by accident)
  --namespace NS         namespace (default: somabrain-prod)
  --from-env-file FILE   POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB (and POSTGRES_APP_USER,
                         POSTGRES_APP_PASSWORD) from a KEY=VALUE file, e.g. the .env.local of
                         scripts/dev_up.sh (then the cluster uses compose's credentials).
                         Without it: user and database `somabrain` and a random password (right for a
                         new Postgres volume only: an initialised database keeps the password it was made
                         with; change that one with `somabrain rotate`, not here). The runtime role is
                         somabrain_app with a random password unless the file names them.
  --jwt-public-key FILE  PEM public key (-----BEGIN PUBLIC KEY-----) that verifies the API's tokens: your
                         identity provider's; in dev .run/jwt/jwt_pub.pem (scripts/dev_up.sh --kind-secrets).
                         Needed when somabrain-secrets does not exist yet, or with --force.
  --kubeconfig FILE      kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
  --force                replace the Secrets that exist. The whole Secret is replaced: keys added since (e.g.
                         by `somabrain rotate jwt-key --add`) are dropped. Running pods keep the values they
                         started with until they restart (kubectl rollout restart).
  --dry-run              say what would be created, kept or replaced; change nothing
  --quiet                print nothing on success
  --help                 show this help

Environment:
  KUBECTL                the kubectl to run (default: kubectl on PATH)

Exit status: 0 every Secret exists (created or kept); 1 the cluster cannot be reached or refused a change;
2 bad usage, an unreadable or invalid input file, a missing tool, or a context the kubeconfig does not have.
USAGE
}

me="k8s_secrets.sh"
PG_SECRET="somabrain-postgres"
JWT_SECRET="somabrain-secrets"
TOKEN_SECRET="somabrain-memory-token"
APP_SECRET="somabrain-postgres-app"

die() { echo "$me: $1" >&2; exit "${2:-2}"; }
say() { [[ "$quiet" == 1 ]] || echo "$me: $*"; }

context=""
namespace="somabrain-prod"
env_file=""
jwt_file=""
kubeconfig=""
force=0
dry_run=0
quiet=0
need_value() { [[ $2 -ge 2 && -n "${3:-}" && "${3:0:2}" != "--" ]] || die "$1 needs a value (try --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --context|--namespace|--from-env-file|--jwt-public-key|--kubeconfig)
      need_value "$1" "$#" "${2:-}"
      case "$1" in
        --context) context="$2" ;;
        --namespace) namespace="$2" ;;
        --from-env-file) env_file="$2" ;;
        --jwt-public-key) jwt_file="$2" ;;
        --kubeconfig) kubeconfig="$2" ;;
      esac
      shift ;;
    --context=*) context="${1#*=}" ;;
    --namespace=*) namespace="${1#*=}" ;;
    --from-env-file=*) env_file="${1#*=}" ;;
    --jwt-public-key=*) jwt_file="${1#*=}" ;;
    --kubeconfig=*) kubeconfig="${1#*=}" ;;
    --force) force=1 ;;
    --dry-run) dry_run=1 ;;
    --quiet) quiet=1 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done

# --- the inputs, all checked before the cluster is asked anything ---------------------------------------------
[[ -n "$context" ]] || die "--context is required (the cluster to write to; \`kubectl config get-contexts\` lists them)"
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
  || die "--namespace '$namespace' is not a valid namespace name (lowercase letters, digits and -, at most 63)"

# A DSN-safe value: the API builds postgresql://USER:PASSWORD@postgres...:5432/DB from these (k8s/base/somabrain.yaml).
dsn_safe() { [[ "$1" =~ ^[A-Za-z0-9._~-]+$ ]]; }

pg_user="somabrain"
pg_db="somabrain"
pg_password=""
pg_from="user and database somabrain, a random password"
app_user="somabrain_app"
app_password=""
app_from="user somabrain_app, a random password"
if [[ -n "$env_file" ]]; then
  [[ -f "$env_file" && -r "$env_file" ]] || die "--from-env-file $env_file: no such readable file"
  env_user=""; env_db=""; env_password=""; env_app_user=""; env_app_password=""  # (bash 3.2: no associative arrays)
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "$line" == *=* ]] || continue
    key="${line%%=*}"; key="${key//[[:space:]]/}"; key="${key#export}"
    value="${line#*=}"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
    case "$key" in
      POSTGRES_USER) env_user="$value" ;;
      POSTGRES_PASSWORD) env_password="$value" ;;
      POSTGRES_DB) env_db="$value" ;;
      POSTGRES_APP_USER) env_app_user="$value" ;;
      POSTGRES_APP_PASSWORD) env_app_password="$value" ;;
    esac
  done < "$env_file"
  pg_password="$env_password"
  [[ -n "$pg_password" ]] || die "--from-env-file $env_file has no POSTGRES_PASSWORD (scripts/dev_up.sh writes one)"
  pg_user="${env_user:-somabrain}"
  pg_db="${env_db:-somabrain}"
  for key in POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB; do
    case "$key" in POSTGRES_USER) v="$pg_user" ;; POSTGRES_PASSWORD) v="$pg_password" ;; *) v="$pg_db" ;; esac
    dsn_safe "$v" || die "--from-env-file $env_file: $key has characters that break the API's Postgres DSN (use letters, digits and . _ ~ -)"
  done
  pg_from="from $env_file"
  app_user="${env_app_user:-somabrain_app}"
  app_password="$env_app_password"
  [[ "$app_user" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] \
    || die "--from-env-file $env_file: POSTGRES_APP_USER '$app_user' must be lower-case letters, digits and _"
  [[ "$app_user" != "$pg_user" ]] \
    || die "--from-env-file $env_file: POSTGRES_APP_USER is the superuser POSTGRES_USER; the apps need a role of their own"
  if [[ -n "$app_password" ]]; then
    dsn_safe "$app_password" || die "--from-env-file $env_file: POSTGRES_APP_PASSWORD has characters that break the apps' Postgres DSN (use letters, digits and . _ ~ -)"
    [[ ${#app_password} -ge 16 ]] || die "--from-env-file $env_file: POSTGRES_APP_PASSWORD must be at least 16 characters"
    app_from="user $app_user, password from $env_file"
  else
    app_from="user $app_user, a random password"
  fi
fi

if [[ -n "$jwt_file" ]]; then
  [[ -f "$jwt_file" && -r "$jwt_file" ]] || die "--jwt-public-key $jwt_file: no such readable file"
  if grep -q -- "PRIVATE KEY-----" "$jwt_file"; then
    die "--jwt-public-key $jwt_file is a private key: give its public half (openssl pkey -in $jwt_file -pubout)"
  fi
  grep -q -- "^-----BEGIN PUBLIC KEY-----" "$jwt_file" && grep -q -- "^-----END PUBLIC KEY-----" "$jwt_file" \
    || die "--jwt-public-key $jwt_file is not a PEM public key (-----BEGIN PUBLIC KEY-----)"
  if command -v openssl >/dev/null && ! openssl pkey -pubin -in "$jwt_file" -noout 2>/dev/null; then
    die "--jwt-public-key $jwt_file is not a PEM public key (openssl cannot read it)"
  fi
fi

kubectl_bin="${KUBECTL:-kubectl}"
command -v "$kubectl_bin" >/dev/null || die "$kubectl_bin not found: put kubectl on PATH (or set KUBECTL)"
base64_of() { base64 | tr -d '\n'; }
command -v base64 >/dev/null || die "base64 is required"
if [[ -n "$kubeconfig" ]]; then
  [[ -f "$kubeconfig" && -r "$kubeconfig" ]] || die "--kubeconfig $kubeconfig: no such readable file"
fi

# --- the cluster ---------------------------------------------------------------------------------------------
kube_flags=()
[[ -z "$kubeconfig" ]] || kube_flags+=(--kubeconfig "$kubeconfig")
err_file="$(mktemp)"
trap 'rm -f "$err_file"' EXIT
last_error() { # kubectl's last words, on one line
  local said
  said="$(sed '/^[[:space:]]*$/d' "$err_file" | tail -n 1)"
  echo "${said:-kubectl exited with an error and said nothing}"
}

contexts="$("$kubectl_bin" ${kube_flags[@]+"${kube_flags[@]}"} config get-contexts -o name 2>"$err_file")" \
  || die "cannot read the kubeconfig: $(last_error)"
if ! grep -qxF -- "$context" <<<"$contexts"; then
  known="$(sed '/^$/d' <<<"$contexts" | paste -sd ' ' -)"
  die "context '$context' is not in the kubeconfig (${kubeconfig:-${KUBECONFIG:-~/.kube/config}}); it has: ${known:-none}"
fi
kube() { "$kubectl_bin" ${kube_flags[@]+"${kube_flags[@]}"} --context "$context" --request-timeout=20s "$@"; }

if ! ns_found="$(kube get namespace "$namespace" --ignore-not-found -o name 2>"$err_file")"; then
  # A cluster that answered "no" was reached: say it refused, not that it is unreachable.
  if grep -qE -- '\((Forbidden|Unauthorized)\)' "$err_file"; then
    refusal="$(last_error)"
    # A namespace-scoped identity (the somabrain-operator Role, k8s/base/rbac.yaml) may not read Namespaces,
    # which are cluster-scoped; that it may list the namespace's Secrets shows the namespace is there.
    if grep -q '(Forbidden)' "$err_file" \
        && kube get secrets -n "$namespace" -o name >/dev/null 2>"$err_file"; then
      ns_found="namespace/$namespace"
    else
      die "the cluster of context '$context' refused to read namespace $namespace: $refusal" 1
    fi
  else
    die "cannot reach the cluster of context '$context': $(last_error)" 1
  fi
fi
say "context $context, namespace $namespace$([[ "$dry_run" == 0 ]] || echo ' (dry run: nothing is changed)')"

exists() { # exists NAME -> 0 when the Secret exists
  local found
  found="$(kube get secret "$1" -n "$namespace" --ignore-not-found -o name 2>"$err_file")" \
    || die "cannot read Secret $namespace/$1: $(last_error)" 1
  [[ -n "$found" ]]
}
pg_exists=0; jwt_exists=0; token_exists=0; app_exists=0
if [[ -n "$ns_found" ]]; then
  if exists "$PG_SECRET"; then pg_exists=1; fi
  if exists "$APP_SECRET"; then app_exists=1; fi
  if exists "$JWT_SECRET"; then jwt_exists=1; fi
  if exists "$TOKEN_SECRET"; then token_exists=1; fi
fi

# Decide everything before writing anything: a missing input stops the run with nothing half-done.
if [[ "$jwt_exists" == 0 || "$force" == 1 ]] && [[ -z "$jwt_file" ]]; then
  why="does not exist in $namespace"; [[ "$jwt_exists" == 0 ]] || why="is to be replaced (--force)"
  die "Secret $JWT_SECRET $why: give --jwt-public-key FILE (the PEM public key that verifies the API's JWTs)"
fi

secret_yaml() { # secret_yaml NAME KEY=BASE64...
  local name="$1"; shift
  printf 'apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$namespace"
  printf '  labels:\n    app.kubernetes.io/part-of: somabrain\n    app.kubernetes.io/managed-by: k8s_secrets.sh\n'
  printf 'data:\n'
  local pair
  for pair in "$@"; do printf '  %s: "%s"\n' "${pair%%=*}" "${pair#*=}"; done
}

# write NAME EXISTS WHAT YAML: create, replace (--force) or keep one Secret; the values go through stdin only.
write() {
  local name="$1" present="$2" what="$3" yaml="$4" verb="create" done_word="created"
  if [[ "$present" == 1 && "$force" == 0 ]]; then
    say "kept Secret $name (it exists; --force replaces it)"
    return
  fi
  [[ "$present" == 0 ]] || { verb="replace"; done_word="replaced"; }
  if [[ "$dry_run" == 1 ]]; then
    say "would have $done_word Secret $name ($what)"
    return
  fi
  printf '%s' "$yaml" | kube "$verb" -f - >/dev/null 2>"$err_file" \
    || die "could not $verb Secret $namespace/$name: $(last_error)" 1
  say "$done_word Secret $name ($what)"
}

if [[ -z "$ns_found" ]]; then
  if [[ "$dry_run" == 1 ]]; then
    say "would have created namespace $namespace"
  else
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    app.kubernetes.io/part-of: somabrain\n' \
      "$namespace" | kube create -f - >/dev/null 2>"$err_file" \
      || die "could not create namespace $namespace: $(last_error)" 1
    say "created namespace $namespace (the manifests add its labels when they are applied)"
  fi
fi

if [[ -z "$pg_password" ]]; then
  pg_password="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
write "$PG_SECRET" "$pg_exists" "POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: $pg_from" "$(secret_yaml "$PG_SECRET" \
  "POSTGRES_USER=$(printf '%s' "$pg_user" | base64_of)" \
  "POSTGRES_PASSWORD=$(printf '%s' "$pg_password" | base64_of)" \
  "POSTGRES_DB=$(printf '%s' "$pg_db" | base64_of)")"
if [[ -z "$app_password" ]]; then
  app_password="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
write "$APP_SECRET" "$app_exists" "POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: $app_from, database $pg_db" \
  "$(secret_yaml "$APP_SECRET" \
  "POSTGRES_USER=$(printf '%s' "$app_user" | base64_of)" \
  "POSTGRES_PASSWORD=$(printf '%s' "$app_password" | base64_of)" \
  "POSTGRES_DB=$(printf '%s' "$pg_db" | base64_of)")"
jwt_yaml=""
[[ -z "$jwt_file" ]] || jwt_yaml="$(secret_yaml "$JWT_SECRET" "jwt_pub.pem=$(base64_of < "$jwt_file")")"
write "$JWT_SECRET" "$jwt_exists" "jwt_pub.pem from ${jwt_file:-nowhere}" "$jwt_yaml"
# 32 random bytes as hex: the API sends it to SomaMemory, which refuses data requests without it. Both pick up a
# new one on their next restart; rotate by overlap (SOMABRAIN_MEMORY_TOKEN_PREVIOUS), see README.
memory_token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
write "$TOKEN_SECRET" "$token_exists" "token: random" "$(secret_yaml "$TOKEN_SECRET" \
  "token=$(printf '%s' "$memory_token" | base64_of)")"
