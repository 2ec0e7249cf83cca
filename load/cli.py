"""`python -m load`: locust load profiles with resource sampling and SLA verdicts.

  python -m load run --env dev|prod --profile smoke|steady|step|spike [--users N] [--duration S]
                     [--report-dir DIR] [--sla FILE] [--set KEY=VALUE ...]
  python -m load baseline [--profile smoke] [--users N] [--duration S] [--report-dir DIR]
  python -m load profiles

Exit codes: 0 pass; 1 a resource limit or an SLA was breached; 2 the run could not be made (bad option,
stack down, no Docker or cluster access, locust crashed). The message says which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from conformance.inventory import NAMESPACE
from load.environments import ROOT, EnvironmentError_, resolve
from load.schedule import PROFILES, parse_weights

EXIT_OK, EXIT_BREACH, EXIT_CANNOT_RUN = 0, 1, 2


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds")
    return value


def _weights(text: str) -> str:
    try:
        parse_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _profile_help() -> str:
    text = "; ".join(f"{p.name}: {p.summary} (default {p.users} users, {p.duration:g} s)" for p in PROFILES.values())
    return text.replace("%", "%%")  # argparse expands %-formats in help


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m load", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(cmd: argparse.ArgumentParser, default_profile: str) -> None:
        cmd.add_argument("--env", choices=("dev", "prod"), default="dev",
                         help="dev: the compose stack (default); prod: the cluster of the current kubeconfig context")
        cmd.add_argument("--profile", choices=sorted(PROFILES), default=default_profile, help=_profile_help())
        cmd.add_argument("--users", type=_positive_int, help="peak users (default: the profile's)")
        cmd.add_argument("--duration", type=_positive_float, help="seconds (default: the profile's)")
        cmd.add_argument("--report-dir", type=Path,
                         help="where reports go (default reports/load-PROFILE-YYYYmmdd-HHMMSS)")
        cmd.add_argument("--endpoint", help="API base URL (dev default: http://127.0.0.1:$SOMABRAIN_HOST_PORT from "
                                            "the env file; prod default: http://127.0.0.1:9696, the port-forward)")
        cmd.add_argument("--env-file", type=Path, help="dev: the compose env file (default .env.local)")
        cmd.add_argument("--project", help="dev: compose project (default: COMPOSE_PROJECT_NAME of the env file, "
                                           "else of the environment, else somabrain)")

    run = sub.add_parser("run", help="play a profile, sample resources, judge, plot", description=(
        "Run locust headless against the environment's API while sampling every workload's CPU and memory about "
        "once a second; write locust CSV/HTML, samples.csv, verdict.json and one PNG per workload to the report "
        "dir; print the verdict. Exit 1 when a limit or an SLA is breached."))
    common(run, "smoke")
    run.add_argument("--namespace", default=NAMESPACE, help=f"prod: namespace (default {NAMESPACE})")
    run.add_argument("--kube-context", help="prod: kubeconfig context (default: the current one)")
    run.add_argument("--kubeconfig", help="prod: kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    run.add_argument("--sla", type=Path, help="SLA override file, merged over load/sla.yaml")
    run.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                     help="SLA override, e.g. --set resources.memory_max=0.8 --set 'routes.POST /act.p95_ms=400'")
    run.add_argument("--weights", type=_weights, default="",
                     help="user weights, e.g. reader=4,writer=2,actor=3,health=1 (health = number of pollers)")
    run.add_argument("--tenants", type=_positive_int, default=8, help="tenants the users are spread over (8)")
    run.add_argument("--think", default="0.5,2.0", help="think time MIN,MAX seconds between requests (0.5,2.0)")
    run.add_argument("--jwt-private-key", help="PEM RSA key: send RS256 bearer tokens (auth on); "
                                               "env SOMABRAIN_LOAD_JWT_KEY")
    run.add_argument("--jwt-issuer", help="iss claim (env SOMABRAIN_LOAD_JWT_ISSUER)")
    run.add_argument("--jwt-audience", help="aud claim (env SOMABRAIN_LOAD_JWT_AUDIENCE)")

    base = sub.add_parser("baseline", help="somabrain's throughput as a ratio to a bare Quart hello-world",
                          description=(
        "Serve a bare Quart hello-world from the somabrain image with the somabrain container's limits and the "
        "same Hypercorn settings, then play the same profile shape with closed-loop users (no think time) "
        "against somabrain (reader/writer/actor mix) and against the hello-world; print and write "
        "baseline.json with somabrain's requests/s as a ratio of the hello-world's. Defaults: smoke, 16 users, "
        "30 s per target. dev only."))
    common(base, "smoke")
    base.set_defaults(duration=None)
    sub.add_parser("profiles", help="list the load profiles")
    return top


def _report_dir(given: Path | None, name: str) -> Path:
    if given is not None:
        return given
    return ROOT / "reports" / f"load-{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "profiles":
        for profile in PROFILES.values():
            print(f"{profile.name:<7} {profile.summary} (default {profile.users} users, {profile.duration:g} s)")
        return EXIT_OK

    from load.docker_api import DockerUnavailable
    from load.locust_run import LocustFailed
    from load.runner import EndpointDown, RunOptions, profile_for
    from load.samplers.kube_metrics import KubeUnavailable
    from load.sla import SLAError, load_sla
    from load.tokens import TokenError, load_private_key

    try:
        environment = resolve(args.env, endpoint=args.endpoint, env_file=args.env_file, project=args.project,
                              namespace=getattr(args, "namespace", None))
        if args.command == "baseline":
            from load.baseline import BaselineError, baseline

            profile = profile_for(args.profile, args.users or 16, args.duration or 30)
            try:
                result = baseline(environment, profile, _report_dir(args.report_dir, "baseline"))
            except BaselineError as exc:
                print(f"load baseline: {exc}", file=sys.stderr)
                return EXIT_CANNOT_RUN
            return EXIT_OK if result["ratio"] is not None else EXIT_CANNOT_RUN

        from load import runner

        sla = load_sla(args.sla, args.settings)
        jwt_options = []
        if args.jwt_private_key:
            load_private_key(args.jwt_private_key)  # fail here, clearly, rather than inside locust
            jwt_options += ["--jwt-private-key", str(Path(args.jwt_private_key).resolve())]
        for flag, value in (("--jwt-issuer", args.jwt_issuer), ("--jwt-audience", args.jwt_audience)):
            if value:
                jwt_options += [flag, value]
        low, _, high = args.think.partition(",")
        try:
            float(low), float(high or low)
        except ValueError:
            print(f"load run: --think {args.think!r}: expected MIN,MAX seconds", file=sys.stderr)
            return EXIT_CANNOT_RUN
        options = RunOptions(profile=profile_for(args.profile, args.users, args.duration),
                             report_dir=_report_dir(args.report_dir, args.profile), sla=sla, weights=args.weights,
                             tenants=args.tenants, think=args.think, jwt_options=jwt_options)
        sampler = environment.sampler(kube_context=args.kube_context, kubeconfig=args.kubeconfig)
        _, code = runner.run(environment, sampler, options)
        return code
    except (EnvironmentError_, SLAError, TokenError, EndpointDown, DockerUnavailable, KubeUnavailable,
            LocustFailed) as exc:
        print(f"load {args.command}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        print(f"load {args.command}: interrupted", file=sys.stderr)
        return 130
