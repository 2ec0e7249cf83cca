"""`somabrain rollout IMAGE`: `kubectl set image` + `kubectl rollout status` + the conformance readiness checks,
with an automatic `kubectl rollout undo` when any of them fails.

    somabrain rollout somabrain:v2.0.0 [--namespace somabrain-prod] [--timeout 300] [--kube-context C]

1. Set the image of container `somabrain` in Deployment `somabrain` (and of `somamemory`, the same image, unless
   --only somabrain), recording the previous images.
2. Watch the rollout like `kubectl rollout status`; a pod in ImagePullBackOff/CrashLoopBackOff fails it at once,
   otherwise --timeout does.
3. Run the conformance readiness checks (ops.readiness) from inside the new API pod.
4. On any failure: print why, put the previous images back, watch that rollout, and exit 1 (2 when the
   rollback itself does not finish).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from conformance.inventory import APPS
from ops.common import (
    EXIT_BROKEN,
    EXIT_DEGRADED,
    EXIT_OK,
    OpsError,
    UsageParser,
    add_target_arguments,
    fail,
    kube_target,
    reachable,
)
from ops.readiness import readiness_failures
from targets.kube import KubeTarget
from targets.kube_api import KubeError, deployment_path, get, patch
from targets.kube_rollout import wait

PROG = "somabrain rollout"
WORKLOADS = tuple(s.in_cluster.workload for s in APPS if s.in_cluster)  # one image serves both apps


def say(message: str) -> None:
    print(message, flush=True)


def set_image(target: KubeTarget, name: str, image: str, cause: str) -> str:
    """Point the Deployment's own container (named like the Deployment) at `image`, by a strategic-merge PATCH as
    `kubectl set image` does; returns the previous image."""
    path = deployment_path(target, name)
    containers = get(target, path)["spec"]["template"]["spec"]["containers"]
    mine = [c for c in containers if c["name"] == name] or (containers if len(containers) == 1 else [])
    if not mine:
        raise KubeError(f"deployment/{name} has containers {[c['name'] for c in containers]}, none named {name!r}")
    previous = str(mine[0]["image"])
    patch(target, path, {"metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
                         "spec": {"template": {"spec": {"containers": [{"name": mine[0]["name"], "image": image}]}}}})
    return previous


def settled_readiness(target: KubeTarget, settle: float, sleep: Callable[[float], None]) -> list[str]:
    """The conformance readiness checks, retried for up to `settle` seconds until they pass. Right after a rollout
    the API's background health checks can still carry the restart of a dependency rolled at the same moment
    (SomaMemory shares the image): seen on a real cluster as a brief `components.memory.http: false`."""
    deadline = time.monotonic() + settle
    while True:
        problems = readiness_failures(target)
        if not problems or time.monotonic() >= deadline:
            return problems
        say(f"  readiness not met yet ({problems[0]}); checking again")
        sleep(2)


def rollout(target: KubeTarget, image: str, workloads: tuple[str, ...], timeout: float,
            sleep: Callable[[float], None] = time.sleep, settle: float = 60.0) -> int:
    previous: dict[str, str] = {}
    why = ""
    try:
        for name in workloads:
            previous[name] = set_image(target, name, image, f"somabrain rollout {image}")
            say(f"deployment/{name}: image {previous[name]} -> {image}")
        for name in workloads:
            ok, message = wait(target, name, timeout, sleep)
            say(f"deployment/{name}: {message}")
            if not ok:
                why = f"deployment/{name} did not roll out: {message}"
                break
        if not why:
            problems = settled_readiness(target, settle, sleep)
            if problems:
                why = "the conformance readiness checks fail after the rollout:\n  " + "\n  ".join(problems)
            else:
                say("readiness: /health, the seed's readiness requirements, /readyz and every workload Ready: OK")
    except KubeError as exc:
        why = f"the Kubernetes API refused a step: {exc}"
    if not why:
        say(f"rolled out {image}")
        return EXIT_OK
    say(f"ROLLOUT FAILED: {why}")
    return rollback(target, previous, timeout, sleep)


def rollback(target: KubeTarget, previous: dict[str, str], timeout: float,
             sleep: Callable[[float], None]) -> int:
    if not previous:
        say("nothing was changed; no rollback needed")
        return EXIT_DEGRADED
    broken = []
    for name, image in previous.items():
        try:
            set_image(target, name, image, f"somabrain rollout: automatic rollback to {image}")
            ok, message = wait(target, name, timeout, sleep)
        except KubeError as exc:
            ok, message = False, str(exc)
        say(f"rollback deployment/{name} -> {image}: {message}")
        if not ok:
            broken.append(name)
    if broken:
        say(f"the rollback did not finish for {', '.join(broken)}: kubectl rollout status deployment/{broken[0]} "
            f"-n {target.namespace}; kubectl describe deployment/{broken[0]} -n {target.namespace}")
        return EXIT_BROKEN
    say("rolled back to the previous image(s)")
    return EXIT_DEGRADED


def parser() -> UsageParser:
    p = UsageParser(prog=PROG, description="Roll a new SomaBrain image out to Kubernetes, check readiness with the "
                    "conformance rules, and roll back automatically when anything fails.",
                    epilog="exit codes: 0 rolled out and ready, 1 failed and rolled back, 2 the rollback failed "
                           "too, 3 bad arguments or no cluster")
    p.add_argument("image", help="the new image, e.g. registry.example/somabrain:v2.0.0")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds each rollout may take (default 300)")
    p.add_argument("--settle", type=float, default=60.0, metavar="S",
                   help="seconds the readiness checks may take to pass after the rollout (default 60)")
    p.add_argument("--only", choices=WORKLOADS, default=None,
                   help="roll only this Deployment (default: both somabrain and somamemory, which share the image)")
    add_target_arguments(p, compose=False)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.image.strip() or any(c.isspace() for c in args.image):
        return fail(PROG, OpsError(f"not an image reference: {args.image!r}", 3))
    target = kube_target(args)
    try:
        reachable(target)
    except OpsError as exc:
        return fail(PROG, exc)
    say(f"{PROG} {args.image}: {target.describe()}")
    return rollout(target, args.image, (args.only,) if args.only else WORKLOADS, args.timeout, settle=args.settle)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
