"""SomaBrain users for locust. Run through `python -m load run`, or by hand:

    locust -f load/locustfile.py --host http://127.0.0.1:9696 --headless --load-profile smoke

Users (FastHttpUser), spread over --load-tenants tenants, all sharing the same tenants so readers find what
writers stored:
    ReaderUser    recall-heavy: POST /recall, now and then POST /remember
    WriterUser    remember-heavy: POST /remember, DELETE /memory/{id} of its own oldest items, some recalls
    ActorUser     POST /act (the mahal predictor)
    HealthPoller  GET /health about once a second (a fixed count of users, default 1)
Weights: --load-weights reader=4,writer=2,actor=3,health=1. Auth: with --jwt-private-key (or the env variable
SOMABRAIN_LOAD_JWT_KEY) every user sends an RS256 bearer token for its tenant and the roles its routes need;
without it, the tenant goes in X-Tenant-ID (auth disabled, the dev default).
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task

if __package__ in (None, ""):  # `locust -f load/locustfile.py` imports this file as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load.profiles import ProfileShape
from load.schedule import parse_weights
from load.tokens import claims, load_private_key, mint

__all__ = ["ActorUser", "HealthPoller", "ProfileShape", "ReaderUser", "WriterUser"]

WORDS = (
    "quarterly review budget forecast customer churn onboarding latency incident postmortem roadmap migration "
    "database index cache eviction kafka topic partition rollout canary feature flag invoice refund contract "
    "renewal hiring plan interview design document security audit certificate rotation backup restore drill "
    "pricing experiment cohort retention dashboard alert threshold oncall handover release notes"
).split()
_user_numbers = itertools.count()
_signing_key: Any = None


def sentence(rng: random.Random, low: int = 6, high: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


@events.init.add_listener
def _configure(environment: Any, **_: Any) -> None:
    global _signing_key
    options = environment.parsed_options
    if options is None:
        return
    weights = parse_weights(options.load_weights)
    for name, cls in (("reader", ReaderUser), ("writer", WriterUser), ("actor", ActorUser)):
        if name in weights:
            cls.weight = weights[name]
    if "health" in weights:
        HealthPoller.fixed_count = weights["health"]
    key_path = options.jwt_private_key or os.environ.get("SOMABRAIN_LOAD_JWT_KEY", "")
    _signing_key = load_private_key(key_path) if key_path else None


class SomaUser(FastHttpUser):
    abstract = True
    roles: tuple[str, ...] = ()

    def wait_time(self) -> float:
        low, _, high = str(self.environment.parsed_options.load_think).partition(",")
        return random.uniform(float(low), float(high or low))  # noqa: S311 - load timing, not crypto

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.number = next(_user_numbers)
        self.rng = random.Random(self.number)  # noqa: S311 - reproducible request bodies
        self.tenant = f"{options.load_tenant_prefix}-{self.number % max(1, options.load_tenants):02d}"
        self._token_expires = 0.0
        self.headers: dict[str, str] = {}
        self.refresh_auth()

    def refresh_auth(self) -> None:
        if _signing_key is None:
            self.headers = {"X-Tenant-ID": self.tenant}
            return
        if time.time() < self._token_expires - 60:
            return
        options = self.environment.parsed_options
        lifetime = 900
        payload = claims(
            issuer=options.jwt_issuer or os.environ.get("SOMABRAIN_LOAD_JWT_ISSUER", ""),
            audience=options.jwt_audience or os.environ.get("SOMABRAIN_LOAD_JWT_AUDIENCE", ""),
            subject=f"load-user-{self.number}", tenant=self.tenant, roles=self.roles, lifetime=lifetime,
            tenant_claim=options.jwt_tenant_claim)
        self.headers = {"Authorization": f"Bearer {mint(_signing_key, payload)}"}
        self._token_expires = payload["exp"]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.refresh_auth()
        return self.client.post(path, json=body, headers=self.headers, name=path)

    def recall(self) -> None:
        self.post("/recall", {"query": sentence(self.rng, 2, 5), "top_k": 5})

    def remember(self) -> str | None:
        with self.client.post("/remember", json={"content": sentence(self.rng), "importance": self.rng.random(),
                                                 "metadata": {"source": "load"}},
                              headers=self.headers, name="/remember", catch_response=True) as response:
            if response.status_code != 201:
                response.failure(f"expected 201, got {response.status_code}")
                return None
            try:
                return str(response.json()["id"])
            except (ValueError, KeyError, TypeError):
                response.failure("201 without an id")
                return None


class ReaderUser(SomaUser):
    """Recall-heavy: ten recalls for each remember."""

    weight = 4
    roles = ("reader", "writer")

    @task(10)
    def recall_task(self) -> None:
        self.recall()

    @task(1)
    def remember_task(self) -> None:
        self.refresh_auth()
        self.remember()


class WriterUser(SomaUser):
    """Remember-heavy: keeps at most 20 of its memories, deleting the oldest; recalls now and then."""

    weight = 2
    roles = ("writer", "reader")
    keep = 20

    def on_start(self) -> None:
        super().on_start()
        self.mine: deque[str] = deque()

    @task(8)
    def remember_task(self) -> None:
        self.refresh_auth()
        memory_id = self.remember()
        if memory_id:
            self.mine.append(memory_id)
        if len(self.mine) > self.keep:
            self.client.delete(f"/memory/{self.mine.popleft()}", headers=self.headers, name="/memory/{id}")

    @task(2)
    def recall_task(self) -> None:
        self.recall()


class ActorUser(SomaUser):
    """POST /act: scores a task against the tenant's statistics (the mahal predictor learns from it)."""

    weight = 3
    roles = ("actor",)

    @task
    def act(self) -> None:
        self.post("/act", {"task": sentence(self.rng, 4, 10)})


class HealthPoller(SomaUser):
    """GET /health about once a second, like a load balancer or a dashboard."""

    fixed_count = 1
    roles = ()

    def wait_time(self) -> float:
        return 1.0

    @task
    def health(self) -> None:
        self.client.get("/health", name="/health")
