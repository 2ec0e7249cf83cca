"""`python -m load baseline`: somabrain's throughput as a ratio to a bare Quart hello-world, in one run.

The hello-world (load/hello_app.py, served by load/hello_server.py with the Hypercorn settings `somabrain api`
uses) runs in a throw-away container of the somabrain image with the somabrain container's own CPU and memory
limits, read-only root and a port published on 127.0.0.1. Then the same profile shape, users and closed-loop
clients (no think time) play first against somabrain (the reader/writer/actor mix), then against the
hello-world. The ratio is somabrain's requests/s over the hello-world's; per route too.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from conformance.inventory import API
from load.docker_api import DockerAPI
from load.environments import ROOT, Environment
from load.locust_run import read_stats, run_locust
from load.samplers.docker_stats import limits_from_inspect
from load.schedule import Profile
from targets.compose import SERVICE_LABEL

HELLO_LOCUSTFILE = ROOT / "load" / "locustfile_hello.py"
SOMABRAIN_LOCUSTFILE = ROOT / "load" / "locustfile.py"
MIX = ("ReaderUser", "WriterUser", "ActorUser")


class BaselineError(RuntimeError):
    pass


def somabrain_container(api: DockerAPI, project: str) -> dict[str, Any]:
    for container in api.containers(project):
        if container.get("Labels", {}).get(SERVICE_LABEL) == API.compose and container.get("State") == "running":
            return api.inspect(container["Id"])
    raise BaselineError(f"no running {API.compose} container in compose project {project!r}; start the stack: make up")


class HelloContainer:
    """The hello-world in the somabrain image, same limits as the somabrain container, on 127.0.0.1:<random>."""

    def __init__(self, somabrain: dict[str, Any]) -> None:
        self.image = somabrain["Config"]["Image"]
        self.memory, self.cpus = limits_from_inspect(somabrain)
        self.name = f"sbload-hello-{int(time.time())}"
        self.url = ""

    def __enter__(self) -> HelloContainer:
        argv = ["docker", "run", "-d", "--rm", "--name", self.name, "--read-only", "--tmpfs", "/tmp",  # noqa: S108 - a tmpfs in the container
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                "-p", "127.0.0.1::8000", "-v", f"{ROOT / 'load'}:/opt/sbload/load:ro",
                "-e", "PYTHONPATH=/opt/sbload", "--entrypoint", "python3"]
        if self.memory:
            argv += ["--memory", str(self.memory)]
        if self.cpus:
            argv += ["--cpus", f"{self.cpus:g}"]
        argv += [self.image, "-m", "load.hello_server", "--bind", "0.0.0.0:8000"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise BaselineError(f"cannot start the hello-world container: {done.stderr.strip()}")
        port = subprocess.run(["docker", "port", self.name, "8000/tcp"], capture_output=True, text=True,
                              timeout=20, check=False).stdout.split()[0].rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        logs = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, check=False)
        self.__exit__(None, None, None)
        raise BaselineError(f"the hello-world did not answer within 60 s:\n{logs.stdout}{logs.stderr}")

    def __exit__(self, *_: object) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60, check=False)


def _play(locustfile: Path, host: str, classes: tuple[str, ...], profile: Profile, prefix: Path) -> dict[str, Any]:
    options = ["--load-profile", profile.name, "--load-users", str(profile.users),
               "--load-duration", str(profile.duration), "--load-think", "0"]
    run_locust(locustfile=locustfile, host=host, user_classes=classes, options=options, csv_prefix=prefix,
               html=Path(f"{prefix}.html"), timeout=profile.duration + 120, log=Path(f"{prefix}.log"))
    routes, total = read_stats(Path(f"{prefix}_stats.csv"))
    return {"total": total.to_dict() if total else None, "routes": {r.route: r.to_dict() for r in routes}}


def baseline(environment: Environment, profile: Profile, report_dir: Path) -> dict[str, Any]:
    if environment.name != "dev":
        raise BaselineError("baseline runs against the compose stack only (--env dev): the hello-world runs in a "
                            "local container with the somabrain container's limits")
    report_dir.mkdir(parents=True, exist_ok=True)
    api = DockerAPI()
    api.ping()
    somabrain = somabrain_container(api, environment.scope)
    with HelloContainer(somabrain) as hello:
        print(f"==> hello-world up at {hello.url} ({hello.image}, {hello.cpus:g} CPU, "
              f"{(hello.memory or 0) // 2**20} MiB)", flush=True)
        print(f"==> somabrain mix ({', '.join(MIX)}), {profile.users} closed-loop users, {profile.duration:g} s",
              flush=True)
        soma = _play(SOMABRAIN_LOCUSTFILE, environment.endpoint, MIX, profile, report_dir / "somabrain")
        print(f"==> hello-world, same shape: {profile.users} closed-loop users, {profile.duration:g} s", flush=True)
        bare = _play(HELLO_LOCUSTFILE, hello.url, ("HelloUser",), profile, report_dir / "hello")
    bare_rps = (bare["total"] or {}).get("rps") or 0.0
    soma_rps = (soma["total"] or {}).get("rps") or 0.0
    result = {
        "profile": profile.name, "users": profile.users, "duration_s": profile.duration,
        "endpoint": environment.endpoint, "hello": {"rps": bare_rps, "url": hello.url, "image": hello.image,
                                                    "cpus": hello.cpus, "memory_bytes": hello.memory},
        "somabrain": soma,
        "ratio": soma_rps / bare_rps if bare_rps else None,
        "route_ratios": {name: r["rps"] / bare_rps if bare_rps else None for name, r in soma["routes"].items()},
    }
    (report_dir / "baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nhello-world: {bare_rps:.1f} req/s;  somabrain mix: {soma_rps:.1f} req/s;  "
          f"ratio {result['ratio']:.2f}" if result["ratio"] is not None else "\nhello-world served nothing")
    for name, r in soma["routes"].items():
        print(f"  {name:<22} {r['rps']:7.1f} req/s  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  "
              f"failures {r['failures']}")
    print(f"report: {report_dir / 'baseline.json'}")
    return result
