"""How many failed sign-ins are allowed, and for how long they count."""

from __future__ import annotations

import pytest

from docdesk.web.throttle import SignInThrottle

WINDOW = 900.0
OFFICE = "203.0.113.7"
HOME = "198.51.100.4"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> SignInThrottle:
    return SignInThrottle(per_user=5, per_address=20, window=WINDOW, clock=clock)


def fail(
    throttle: SignInThrottle, user_id: str, address: str | None, times: int
) -> None:
    for _ in range(times):
        throttle.failed(user_id, address)


def test_an_id_may_fail_up_to_its_limit_before_it_waits(
    throttle: SignInThrottle,
) -> None:
    fail(throttle, "ann", OFFICE, 4)
    before = throttle.retry_after("ann", OFFICE)

    throttle.failed("ann", OFFICE)

    assert before == 0
    assert throttle.retry_after("ann", OFFICE) == WINDOW
    # The same id from anywhere else waits too: the guesser may move.
    assert throttle.retry_after("ann", HOME) == WINDOW
    assert throttle.retry_after("bob", OFFICE) == 0


def test_the_wait_ends_when_the_oldest_counted_failure_leaves_the_window(
    throttle: SignInThrottle, clock: Clock
) -> None:
    throttle.failed("ann", OFFICE)
    clock.now += 100
    fail(throttle, "ann", OFFICE, 4)

    clock.now += WINDOW - 100 - 1
    waiting = throttle.retry_after("ann", OFFICE)
    clock.now += 1

    assert waiting == 1
    assert throttle.retry_after("ann", OFFICE) == 0


def test_a_wait_is_at_most_the_window_however_many_failures_are_counted(
    throttle: SignInThrottle, clock: Clock
) -> None:
    fail(throttle, "ann", OFFICE, 5)
    clock.now += 600
    fail(throttle, "ann", OFFICE, 50)

    assert throttle.retry_after("ann", OFFICE) == WINDOW
    clock.now += WINDOW
    assert throttle.retry_after("ann", OFFICE) == 0


def test_a_success_clears_its_id_but_not_its_address(
    throttle: SignInThrottle,
) -> None:
    fail(throttle, "ann", OFFICE, 4)
    for n in range(15):
        throttle.failed(f"guess-{n}", OFFICE)
    # The right password's own try counts until it is known to be right.
    throttle.failed("ann", OFFICE)

    throttle.succeeded("ann", OFFICE)

    fail(throttle, "ann", HOME, 4)
    assert throttle.retry_after("ann", HOME) == 0
    assert throttle.retry_after("carl", OFFICE) == 0
    throttle.failed("guess-15", OFFICE)
    assert throttle.retry_after("carl", OFFICE) == WINDOW


def test_an_address_trying_many_ids_waits_for_every_id(
    throttle: SignInThrottle,
) -> None:
    for n in range(19):
        throttle.failed(f"guess-{n}", OFFICE)
    before = throttle.retry_after("new-id", OFFICE)

    throttle.failed("guess-19", OFFICE)

    assert before == 0
    assert throttle.retry_after("new-id", OFFICE) == WINDOW
    assert throttle.retry_after("new-id", HOME) == 0


def test_without_an_address_only_the_id_counts(throttle: SignInThrottle) -> None:
    for n in range(30):
        throttle.failed(f"guess-{n}", None)

    assert throttle.retry_after("new-id", None) == 0
    fail(throttle, "ann", None, 5)
    assert throttle.retry_after("ann", None) == WINDOW


def test_memory_is_bounded_by_forgetting_the_least_recent(clock: Clock) -> None:
    throttle = SignInThrottle(per_user=1, per_address=1, max_tracked=4, clock=clock)

    for n in range(10):
        throttle.failed(f"guess-{n}", None)

    remembered = [n for n in range(10) if throttle.retry_after(f"guess-{n}", None)]
    assert remembered == [6, 7, 8, 9]


def test_successes_from_one_address_never_add_up(throttle: SignInThrottle) -> None:
    for _ in range(50):
        throttle.failed("ann", OFFICE)
        throttle.succeeded("ann", OFFICE)

    assert throttle.retry_after("bob", OFFICE) == 0
