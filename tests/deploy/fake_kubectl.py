"""A FAKE kubectl for the tests of scripts/k8s_secrets.sh: the few commands that script runs, on a JSON state file.

Not a cluster and not kubectl: it answers `config get-contexts -o name`, `get namespace|secret NAME
[--ignore-not-found] -o name`, and `create|replace -f -` (one object on stdin), with kubectl's exit codes and
error wording where the script relies on them. The state file (`$FAKE_KUBECTL_STATE`) holds
`contexts`, `reachable`, `refuse_writes`, `objects` (by "Kind/namespace/name") and `calls` (every argv, so a
test can check that no credential is ever passed on a command line).

The no-cluster case is tested against the real kubectl (tests/deploy/test_k8s_secrets.py); this fake covers what
needs a cluster that answers: create what is missing, keep what exists, --force, --dry-run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

GLOBAL_WITH_VALUE = {"--kubeconfig", "--context", "-n", "--namespace"}


def _load(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    state.setdefault("contexts", ["fake"])
    state.setdefault("reachable", True)
    state.setdefault("refuse_writes", False)
    state.setdefault("objects", {})
    state.setdefault("calls", [])
    return state


def _flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in GLOBAL_WITH_VALUE:
            flags[arg.lstrip("-")] = next(it, "")
        elif arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            flags[key] = value
        elif arg in ("--ignore-not-found",):
            flags[arg[2:]] = "true"
        elif arg == "-o" or arg == "-f":
            flags[arg[1:]] = next(it, "")
        else:
            rest.append(arg)
    return flags, rest


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_KUBECTL_STATE"])
    state = _load(path)
    state["calls"].append(argv)
    try:
        return _run(state, argv)
    finally:
        path.write_text(json.dumps(state, indent=1))


def _run(state: dict[str, Any], argv: list[str]) -> int:
    flags, rest = _flags(argv)
    if rest[:2] == ["config", "get-contexts"]:
        print("\n".join(state["contexts"]))
        return 0
    if flags.get("context") not in state["contexts"]:
        print(f"error: context was not found for specified context: {flags.get('context')}", file=sys.stderr)
        return 1
    if not state["reachable"]:
        print("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?",
              file=sys.stderr)
        return 1
    verb = rest[0] if rest else ""
    if verb == "get" and len(rest) == 3:
        kind = {"namespace": "Namespace", "secret": "Secret"}[rest[1]]
        namespace = "" if kind == "Namespace" else flags.get("n", flags.get("namespace", "default"))
        if f"{kind}/{namespace}/{rest[2]}" in state["objects"]:
            print(f"{rest[1]}/{rest[2]}")
        elif "ignore-not-found" not in flags:
            print(f'Error from server (NotFound): {rest[1]}s "{rest[2]}" not found', file=sys.stderr)
            return 1
        return 0
    if verb in ("create", "replace") and flags.get("f") == "-":
        obj = yaml.safe_load(sys.stdin.read())
        meta = obj["metadata"]
        key = f"{obj['kind']}/{meta.get('namespace', '') if obj['kind'] != 'Namespace' else ''}/{meta['name']}"
        if state["refuse_writes"]:
            print(f'Error from server (Forbidden): {obj["kind"].lower()}s is forbidden: User "dev" cannot {verb}',
                  file=sys.stderr)
            return 1
        if verb == "create" and key in state["objects"]:
            print(f'Error from server (AlreadyExists): "{meta["name"]}" already exists', file=sys.stderr)
            return 1
        if verb == "replace" and key not in state["objects"]:
            print(f'Error from server (NotFound): "{meta["name"]}" not found', file=sys.stderr)
            return 1
        state["objects"][key] = obj
        print(f"{obj['kind'].lower()}/{meta['name']} {verb}d")
        return 0
    print(f"fake kubectl: unsupported command {argv}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
