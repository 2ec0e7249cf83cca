"""The locust side of the load shapes: the --load-* options and `ProfileShape`, which plays load.schedule.

Any locustfile importing this module gets the options and the shape.
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape, events

from load.schedule import PROFILES, Profile, stage


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("somabrain load profile")
    group.add_argument("--load-profile", choices=sorted(PROFILES), default="smoke", help="load shape to play")
    group.add_argument("--load-users", type=int, default=0, help="peak users (0: the profile's default)")
    group.add_argument("--load-duration", type=float, default=0, help="seconds (0: the profile's default)")
    group.add_argument("--load-think", default="0.5,2.0",
                       help="think time between a user's requests, MIN,MAX seconds; 0 for closed-loop throughput")
    group.add_argument("--load-weights", default="",
                       help="user class weights, e.g. reader=4,writer=2,actor=3,health=1 (health: poller count)")
    group.add_argument("--load-tenants", type=int, default=8, help="tenants the users are spread over")
    group.add_argument("--load-tenant-prefix", default="load", help="tenant ids are PREFIX-00, PREFIX-01, ...")
    group.add_argument("--jwt-private-key", default="",
                       help="PEM private key: send RS256 bearer tokens (auth on). Env: SOMABRAIN_LOAD_JWT_KEY")
    group.add_argument("--jwt-issuer", default="", help="iss claim (env SOMABRAIN_LOAD_JWT_ISSUER)")
    group.add_argument("--jwt-audience", default="", help="aud claim (env SOMABRAIN_LOAD_JWT_AUDIENCE)")
    group.add_argument("--jwt-tenant-claim", default="tenant", help="claim carrying the tenant (default tenant)")


def resolved(options: Any) -> Profile:
    base = PROFILES[options.load_profile]
    return Profile(base.name, options.load_duration or base.duration, options.load_users or base.users, base.summary)


class ProfileShape(LoadTestShape):
    """Plays the profile chosen by --load-profile."""

    def tick(self) -> tuple[int, float] | None:
        if self.runner is None:  # locust sets it before the first tick
            return None
        profile = resolved(self.runner.environment.parsed_options)
        return stage(profile.name, self.get_run_time(), profile.users, profile.duration)  # type: ignore[no-untyped-call]
