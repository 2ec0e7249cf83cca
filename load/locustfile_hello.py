"""The baseline target for locust: GET / of load/hello_app.py, with the same shapes and options as locustfile.py."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from locust import FastHttpUser, task

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load.profiles import ProfileShape

__all__ = ["HelloUser", "ProfileShape"]


class HelloUser(FastHttpUser):
    def wait_time(self) -> float:
        low, _, high = str(self.environment.parsed_options.load_think).partition(",")
        return random.uniform(float(low), float(high or low))  # noqa: S311 - load timing, not crypto

    @task
    def hello(self) -> None:
        self.client.get("/", name="/")
