"""`python -m conformance parity|diff`: the compose <-> Kubernetes parity gate and the live report diff.

Exit codes (both subcommands): 0 parity holds (only accepted differences), 1 drift (or a stale
exception), 2 an input cannot be read (the message names the file and the reason).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from conformance.loaders.errors import InputError
from conformance.parity.engine import run_parity
from conformance.parity.findings import DIMENSIONS, Finding
from conformance.parity.live_diff import run_diff
from conformance.parity.writers import FORMATS, render, summary, use_colour

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EXCEPTIONS = Path(__file__).resolve().parent / "parity-exceptions.yaml"
DEFAULT_DIFF_EXCEPTIONS = Path(__file__).resolve().parent / "diff-exceptions.yaml"

EPILOG = """\
exit codes: 0 parity holds (every difference is accepted in the exceptions file with a reason),
            1 drift, or a stale exception (one that matches no difference any more),
            2 an input cannot be read (the message names the file and why).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Prove that the compose dev stack and the Kubernetes deployment are the same service.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{parity,diff}")

    parity = sub.add_parser(
        "parity",
        help="compare compose/ against k8s/ point by point (static, no cluster needed)",
        description=(
            "Compare the compose project (as `docker compose config` renders it: files, env file, profiles) with the "
            "Kubernetes manifests (kustomize-rendered), service by service through the service inventory "
            "(conformance/inventory.py), along these dimensions: " + ", ".join(DIMENSIONS) + "."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parity.add_argument(
        "--compose",
        action="append",
        type=Path,
        metavar="FILE",
        help="compose file; repeat to layer files like `docker compose -f` (default: compose/docker-compose.yml "
        "plus docker-compose.override.yml beside it when present)",
    )
    parity.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="variables for interpolation (default: .env.local in the repo root, else compose/.env; without "
        "either, documented placeholders for the required variables)",
    )
    parity.add_argument(
        "--profile",
        action="append",
        metavar="NAME",
        help="compose profile to enable; repeat for several (default: what `docker compose up` runs: "
        "COMPOSE_PROFILES, else only the services without a profile)",
    )
    parity.add_argument(
        "--k8s",
        type=Path,
        default=None,
        metavar="DIR",
        help="kustomization or manifest directory (default: k8s, the production entry point; k8s/overlays/monitoring "
        "adds the opt-in ServiceMonitors)",
    )
    parity.add_argument(
        "--exceptions",
        type=Path,
        default=None,
        metavar="FILE",
        help="accepted differences with reasons (default: conformance/parity-exceptions.yaml)",
    )
    parity.add_argument("--no-exceptions", action="store_true", help="report every difference as drift")
    _output_args(parity)

    diff = sub.add_parser(
        "diff",
        help="compare a dev and a prod conformance report check by check",
        description=(
            "Compare two reports of `pytest conformance/ --env dev|prod --report-json FILE` (format: "
            "conformance/schemas/report.schema.json) check by check. Parity is passed on both sides; a check "
            "that failed, errored or was skipped on either side, or ran on one side only, is drift unless the "
            "exceptions file accepts exactly those two statuses for it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("dev_report", type=Path, help="the dev (compose) report")
    diff.add_argument("prod_report", type=Path, help="the prod (cluster) report")
    diff.add_argument(
        "--exceptions",
        type=Path,
        default=None,
        metavar="FILE",
        help="accepted differences (dimension `check`, subject = the check id, dev/prod = the statuses); "
        "default: conformance/diff-exceptions.yaml",
    )
    diff.add_argument("--no-exceptions", action="store_true", help="report every difference as drift")
    _output_args(diff)
    return parser


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="text", help="report format (default: text)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the report here instead of stdout")
    parser.add_argument("--all", action="store_true", help="text format: list the points in parity too")


def _emit(findings: list[Finding], args: argparse.Namespace, title: str, notes: list[str]) -> None:
    colour = args.out is None and args.format == "text" and use_colour(sys.stdout)
    text = render(findings, args.format, title=title, colour=colour, show_ok=args.all)
    if args.format == "text" and notes:
        text = "".join(f"note: {n}\n" for n in notes) + text
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(summary(findings), f"-> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "parity":
            exceptions = None if args.no_exceptions else (args.exceptions or DEFAULT_EXCEPTIONS)
            report = run_parity(
                compose_files=args.compose,
                k8s_dir=args.k8s or REPO / "k8s",
                exceptions_file=exceptions,
                env_file=args.env_file,
                profiles=args.profile,
                repo_root=REPO,
            )
            title = "Parity: compose (dev) vs k8s (prod)"
            _emit(report.findings, args, title, report.notes)
            code = report.exit_code
        else:
            accepted = None if args.no_exceptions else (args.exceptions or DEFAULT_DIFF_EXCEPTIONS)
            findings = run_diff(args.dev_report, args.prod_report, accepted)
            _emit(findings, args, "Live parity: dev report vs prod report", [])
            code = 1 if any(f.status.failing for f in findings) else 0
    except InputError as exc:
        print(f"conformance {args.command}: cannot read input: {exc}", file=sys.stderr)
        return 2
    if args.format == "text" and args.out is None:
        print(f"({time.perf_counter() - started:.2f}s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
