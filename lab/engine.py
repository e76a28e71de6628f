"""The lab's discrete-event core: a virtual clock, a queue of timed actions, seeded random streams.

Time is the project's `FakeClock`, moved only by the event loop, so the pure cores the lab drives
(the GCRA limiter, the breaker, the controller) read the same kind of `now` the Lambdas read from
`SystemClock`, and an hour of traffic takes seconds. Actions due at the same instant run in the
order they were scheduled, and every random draw comes from a stream named after its purpose
(arrivals, latency, jitter...), so one seed gives one history, and adding draws to one purpose
does not reshuffle another.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from throttling.core.clock import FakeClock

__all__ = ["Simulation"]


class Simulation:
    """Runs actions at virtual times; `now` only moves when the loop reaches the next action."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.clock = FakeClock(0.0)
        self._actions: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._streams: dict[str, random.Random] = {}

    @property
    def now(self) -> float:
        return self.clock.now()

    def at(self, when: float, action: Callable[..., Any], *args: Any) -> None:
        """Run `action(*args)` at virtual time `when` (not in the past)."""
        if not math.isfinite(when) or when < self.clock.now():
            raise ValueError(f"an action can only be scheduled at a finite time >= now ({self.clock.now()}), got {when}")
        heapq.heappush(self._actions, (when, next(self._order), action, args))

    def after(self, delay_sec: float, action: Callable[..., Any], *args: Any) -> None:
        """Run `action(*args)` `delay_sec` from now."""
        if not delay_sec >= 0:
            raise ValueError(f"delay_sec must be >= 0, got {delay_sec}")
        self.at(self.clock.now() + delay_sec, action, *args)

    def every(self, period_sec: float, action: Callable[[], Any], *, first_at: float = 0.0) -> None:
        """Run `action()` at `first_at`, then every `period_sec`, as long as the loop runs."""
        if not period_sec > 0:
            raise ValueError(f"period_sec must be > 0, got {period_sec}")

        def tick() -> None:
            action()
            self.after(period_sec, tick)

        self.at(first_at, tick)

    def rng(self, purpose: str) -> random.Random:
        """The random stream for `purpose`, seeded from the simulation's seed and the purpose's name."""
        stream = self._streams.get(purpose)
        if stream is None:
            # A str seed is hashed with SHA-512 by `random`, so the stream does not depend on PYTHONHASHSEED.
            stream = self._streams[purpose] = random.Random(f"{self.seed}/{purpose}")
        return stream

    def run(self, until: float) -> None:
        """Run every action due at or before `until`, then leave the clock at `until`."""
        actions, clock = self._actions, self.clock
        while actions and actions[0][0] <= until:
            when, _, action, args = heapq.heappop(actions)
            clock.set(when)
            action(*args)
        clock.set(max(clock.now(), until))

    @property
    def pending_actions(self) -> int:
        return len(self._actions)
