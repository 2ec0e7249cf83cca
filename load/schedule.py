"""Load shapes as a pure schedule: how many users run at each second of a profile. No locust import here
(importing locust monkey-patches the process with gevent), so the CLI and the verdict can use it freely.

    smoke   ramp to N users in a few seconds, hold (default 60 s, N=4): "does everything answer?"
    steady  ramp over the first 10 %, hold N (default 180 s, N=16): the working level the limits are sized for
    step    four equal steps N/4, N/2, 3N/4, N (default 240 s, N=24): where latency starts to bend
    spike   N/4, then N within a second for the middle 20 %, then N/4 again (default 180 s, N=32): recovery
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    duration: float  # seconds
    users: int  # peak users
    summary: str


PROFILES = {
    "smoke": Profile("smoke", 60, 4, "ramp to N users in a few seconds and hold"),
    "steady": Profile("steady", 180, 16, "ramp over the first 10% and hold N users"),
    "step": Profile("step", 240, 24, "four equal steps up to N users"),
    "spike": Profile("spike", 180, 32, "N/4 users, N for the middle 20%, then N/4 again"),
}


def stage(profile: str, elapsed: float, users: int, duration: float) -> tuple[int, float] | None:
    """(user count, spawn rate per second) at `elapsed` seconds, or None once the profile is over."""
    if elapsed >= duration:
        return None
    users = max(1, users)
    if profile == "smoke":
        return users, max(1.0, users / 3)
    if profile == "steady":
        return users, max(1.0, users / max(1.0, duration * 0.1))
    if profile == "step":
        step = min(3, int(elapsed // (duration / 4)))
        return max(1, math.ceil(users * (step + 1) / 4)), float(users)
    if profile == "spike":
        base = max(1, users // 4)
        in_spike = 0.4 * duration <= elapsed < 0.6 * duration
        return (users if in_spike else base), float(users)
    raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")


USER_KINDS = ("reader", "writer", "actor", "health")


def parse_weights(text: str) -> dict[str, int]:
    """"reader=4,writer=2" -> {"reader": 4, "writer": 2}; ValueError naming the bad part."""
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, value = part.split("=", 1) if "=" in part else (part, "")
        if name not in USER_KINDS or not value.isdigit():
            raise ValueError(f"weights: {part!r}: expected reader|writer|actor|health=INTEGER")
        weights[name] = int(value)
    return weights
