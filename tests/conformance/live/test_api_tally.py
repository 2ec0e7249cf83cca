"""The api checks' tally: what it reports after a run that passed, failed a check, or hit an unexpected error.

Fast unit tests of the counting and reporting only (no live API): the failures are real schemathesis exception
objects, built the way its checks build them, not mocks of its internals.
"""

from __future__ import annotations

import pytest
from schemathesis.core.failures import Failure, FailureGroup

from conformance.live.api_tally import ApiTally


def failure(title: str) -> Failure:
    return Failure(operation="POST /remember", title=title, message=f"{title}: details")


def answered(tally: ApiTally, status: int, error: BaseException | None = None) -> None:
    """One case as the check runs it: the call is answered, then validation may raise."""

    def step() -> None:
        tally.response(status)
        if error is not None:
            raise error

    tally.run(step)


def test_a_clean_run_reports_its_cases_and_zero_failures() -> None:
    tally = ApiTally()
    for status in (201, 201, 422):
        answered(tally, status)
    assert tally.observed() == {"cases": 3, "failures": 0, "errors": 0, "status_codes": {201: 2, 422: 1}}


def test_check_failures_are_counted_by_title_and_still_raised() -> None:
    tally = ApiTally()
    answered(tally, 201)
    with pytest.raises(FailureGroup):
        answered(tally, 500, FailureGroup([failure("Server error"), failure("Response violates schema")]))
    with pytest.raises(Failure):
        answered(tally, 500, failure("Server error"))
    observed = tally.observed()
    assert (observed["cases"], observed["failures"], observed["errors"]) == (3, 3, 0)
    assert observed["failed_checks"] == {"Response violates schema": 1, "Server error": 2}


def test_an_unexpected_exception_is_an_error_with_its_message() -> None:
    tally = ApiTally()

    def step() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError):
        tally.run(step)
    assert tally.observed() == {
        "cases": 1, "failures": 0, "errors": 1, "status_codes": {},
        "error_messages": ["ConnectionError: connection refused"],
    }


def test_stateful_outcomes_are_reported_by_call() -> None:
    tally = ApiTally()
    tally.response(201, "POST /remember -> 201")
    tally.response(204, "DELETE /memory/{item_id} -> 204")
    tally.response(201, "POST /remember -> 201")
    assert tally.observed()["by_outcome"] == {"DELETE /memory/{item_id} -> 204": 1, "POST /remember -> 201": 2}
