"""What every operator tool shares: exit codes, report lines, and choosing the environment target."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from conformance.inventory import NAMESPACE
from targets.base import Target, TargetUnreachable
from targets.compose import ComposeTarget
from targets.envfile import ENV_FILE, compose_project
from targets.kube import KubeTarget

REPO = Path(__file__).resolve().parent.parent

EXIT_OK = 0
EXIT_DEGRADED = 1  # doctor: only warnings; other tools: the operation failed (and was undone where possible)
EXIT_BROKEN = 2
EXIT_USAGE = 3  # unusable arguments or an unreachable environment


class OpsError(Exception):
    """An operation cannot go on; the message says why and what to do. Exit code attached."""

    def __init__(self, message: str, code: int = EXIT_BROKEN) -> None:
        super().__init__(message)
        self.code = code


class UsageParser(argparse.ArgumentParser):
    """argparse that exits EXIT_USAGE (3) on bad arguments instead of argparse's 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def add_target_arguments(parser: argparse.ArgumentParser, compose: bool = True) -> None:
    if compose:
        parser.add_argument("--compose-project", metavar="P", default=None,
                            help="dev: compose project (default: COMPOSE_PROJECT_NAME of .env.local, else of the "
                                 "environment, else somabrain)")
    parser.add_argument("--kube-context", metavar="C", default=None,
                        help="prod: kubeconfig context (default: the current context)")
    parser.add_argument("--kubeconfig", metavar="FILE", default=None,
                        help="prod: kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--namespace", default=NAMESPACE, help=f"prod: namespace (default {NAMESPACE})")


def build_target(env: str, args: argparse.Namespace) -> Target:
    """The target of `--env`: dev the compose project (and the env file it was started with, `--env-file` where
    the tool has one), prod the kubeconfig's cluster."""
    if env == "dev":
        env_file = getattr(args, "env_file", None) or ENV_FILE
        return ComposeTarget(compose_project(args.compose_project, env_file), env_file=env_file)
    return kube_target(args)


def kube_target(args: argparse.Namespace) -> KubeTarget:
    """The prod target, for the tools that have nothing to do in dev (rollout, rotate jwt-key)."""
    return KubeTarget(context=args.kube_context, namespace=args.namespace, kubeconfig=args.kubeconfig)


def reachable(target: Target) -> None:
    """Raise OpsError(EXIT_USAGE) when the environment itself cannot be used."""
    try:
        target.check_reachable()
    except TargetUnreachable as exc:
        raise OpsError(f"{target.env}: {exc}", EXIT_USAGE) from None


@dataclass(frozen=True)
class Line:
    """One diagnosis or step: OK, WARN or FAIL, what was seen, and the next command a human would run."""

    status: str  # OK | WARN | FAIL
    check: str
    message: str
    next: str = ""

    def render(self) -> str:
        text = f"{self.status:<4} {self.check:<10} {self.message}"
        if self.next and self.status != "OK":
            text += "\n" + "\n".join(f"     next: {cmd}" for cmd in self.next.splitlines())
        return text


def emit(line: Line, out: TextIO = sys.stdout) -> Line:
    print(line.render(), file=out, flush=True)
    return line


def fail(prog: str, exc: OpsError) -> int:
    print(f"{prog}: {exc}", file=sys.stderr)
    return exc.code
