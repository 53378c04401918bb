"""The freeze guard: a worker that wakes from a freeze past half its session timeout
exits before its next session write (``streams.freeze``)."""

from __future__ import annotations

import time

import pytest

from streams.freeze import FreezeGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guarded(limit_s: float = 5.0) -> tuple[FreezeGuard, Clock, list[float]]:
    clock, frozen = Clock(), []
    return FreezeGuard(limit_s, clock=clock, on_frozen=frozen.append), clock, frozen


def test_ticks_within_the_limit_let_every_write_through() -> None:
    guard, clock, frozen = guarded()
    guard.last = clock()
    for _ in range(20):
        clock.now += 4.9  # a slow tick, still under the limit
        guard.check()
        guard.tick()
    assert frozen == []


def test_a_write_after_a_freeze_is_stopped_before_the_tick_moves_the_mark() -> None:
    guard, clock, frozen = guarded()
    guard.last = clock()
    clock.now += 15.0  # SIGSTOP for 15 s: the ticking thread stood still too
    guard.check()  # the event loop ran first after SIGCONT
    assert frozen == [15.0]


def test_the_ticking_thread_sees_the_freeze_when_it_runs_first() -> None:
    guard, clock, frozen = guarded()
    guard.last = clock()
    clock.now += 6.0
    guard.tick()
    assert frozen == [6.0]


def test_a_guard_not_yet_started_never_fires() -> None:
    guard, clock, frozen = guarded()
    clock.now += 600.0  # a slow start-up: models, table recovery
    guard.check()
    assert frozen == []


def test_the_started_thread_keeps_the_mark_moving() -> None:
    frozen: list[float] = []
    guard = FreezeGuard(5.0, tick_s=0.01, on_frozen=frozen.append)
    guard.start()
    first = guard.last
    time.sleep(0.2)
    assert guard.last is not None and first is not None and guard.last > first
    assert frozen == []


def test_the_default_clock_runs_through_a_suspend_of_the_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """time.monotonic (CLOCK_MONOTONIC) stops while a Linux host is suspended, so a guard
    on it saw no gap after a suspend past the session timeout; CLOCK_BOOTTIME runs on."""
    if not hasattr(time, "CLOCK_BOOTTIME"):
        pytest.skip("CLOCK_BOOTTIME is Linux's")
    slept = 3600.0  # a suspend: BOOTTIME ran on, MONOTONIC did not
    real = time.clock_gettime
    monkeypatch.setattr(time, "clock_gettime", lambda clock: real(clock) + (
        slept if clock == time.CLOCK_BOOTTIME else 0.0))
    monkeypatch.setattr(time, "monotonic", lambda: real(time.CLOCK_MONOTONIC))
    guard = FreezeGuard(5.0)
    assert guard.clock() - time.monotonic() > slept - 60
