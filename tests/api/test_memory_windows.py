"""The in-process sliding window behind `rate_limit_storage = "memory://"` (a clock we move by hand)."""

from __future__ import annotations

import pytest

from daguerre.api import ratelimit
from daguerre.api.ratelimit import MemoryWindows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


def test_each_request_ages_out_on_its_own(clock):
    windows = MemoryWindows(60)
    first = windows.hit("a", 2)
    assert (first.allowed, first.remaining, first.reset) == (True, 1, int(clock.time() + 60))
    clock.now += 20
    assert windows.hit("a", 2).remaining == 0
    clock.now += 10
    refused = windows.hit("a", 2)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 30)  # the first ages out
    assert refused.reset == int(clock.time() + 30)
    clock.now += 30  # exactly one window after the first request: it no longer counts
    assert windows.hit("a", 2).allowed
    assert not windows.hit("a", 2).allowed  # the second is still in the window


def test_a_refused_request_is_not_counted(clock):
    windows = MemoryWindows(60)
    assert windows.hit("a", 1).allowed
    for _ in range(5):
        clock.now += 10
        assert not windows.hit("a", 1).allowed
    clock.now += 10.5  # 60.5 s after the only counted request
    assert windows.hit("a", 1).allowed


def test_accounts_are_counted_apart_and_a_lowered_limit_waits_for_enough_to_age_out(clock):
    windows = MemoryWindows(60)
    for second in range(4):
        clock.now = 1000.0 + second
        assert windows.hit("a", 10).allowed
    assert windows.hit("b", 1).allowed
    clock.now = 1010.0
    refused = windows.hit("a", 3)  # 4 in the window, limit now 3: two must age out
    assert (refused.allowed, refused.retry_after) == (False, 51)  # the one made at 1001 s
    clock.now = 1061.0
    assert windows.hit("a", 3).allowed


def test_idle_accounts_are_forgotten_once_a_window(clock):
    windows = MemoryWindows(60)
    windows.hit("idle", 5)
    clock.now += 30
    windows.hit("busy", 5)
    assert len(windows) == 2
    clock.now += 31  # past the sweep time; "idle" last came 61 s ago, "busy" 31 s ago
    windows.hit("busy", 5)
    assert len(windows) == 1
    assert windows.hit("idle", 1).allowed  # a forgotten account starts afresh
