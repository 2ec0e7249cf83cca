"""The profile schedules (pure) and the user weights."""

from __future__ import annotations

import pytest

from load.schedule import PROFILES, parse_weights, stage


def users_over(profile: str, users: int, duration: float) -> list[int]:
    return [s[0] for t in range(int(duration)) if (s := stage(profile, t, users, duration)) is not None]


def test_every_profile_ends_at_its_duration() -> None:
    for name in PROFILES:
        assert stage(name, 59.9, 8, 60) is not None
        assert stage(name, 60, 8, 60) is None


def test_smoke_and_steady_hold_n() -> None:
    assert set(users_over("smoke", 4, 30)) == {4}
    assert stage("steady", 0, 32, 180) == (32, pytest.approx(32 / 18))  # reaches N over the first 10 %
    assert stage("steady", 0, 4, 180) == (4, 1.0)  # at least one user a second


def test_step_climbs_in_four_steps() -> None:
    seen = users_over("step", 24, 240)
    assert sorted(set(seen)) == [6, 12, 18, 24]
    assert seen == sorted(seen)


def test_spike_goes_up_and_back() -> None:
    seen = users_over("spike", 32, 100)
    assert seen[0] == 8 and seen[50] == 32 and seen[-1] == 8
    assert seen.count(32) == 20


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        stage("soak", 0, 1, 10)


def test_weights() -> None:
    assert parse_weights("") == {}
    assert parse_weights("reader=4, writer=0,health=2") == {"reader": 4, "writer": 0, "health": 2}
    for bad in ("reader", "reader=-1", "admin=1", "reader=x"):
        with pytest.raises(ValueError, match="expected reader"):
            parse_weights(bad)
