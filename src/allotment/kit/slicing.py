"""Long background work in short slices of the event loop.

    slice = TimeSlice()          # 2 ms by default
    for row in rows:
        ...
        await slice.pause()      # yields once 2 ms of work have passed since the last yield

Background tasks (the decision log's COPY, the usage refresher) share the worker's event loop
with checks. Under load every request waits for whatever runs before it, so a task that
formats rows for 30 ms adds 30 ms to every check queued meanwhile. Yielding every N items
bounds a slice only as well as N guesses the cost of an item; yielding by the clock bounds it
whatever the items cost (docs/performance.md, "The tail, outside the handler").
"""

from __future__ import annotations

import asyncio
import time


class TimeSlice:
    __slots__ = ("budget_s", "_since")

    def __init__(self, budget_s: float = 0.002) -> None:
        self.budget_s = budget_s
        self._since = time.perf_counter()

    async def pause(self) -> None:
        now = time.perf_counter()
        if now - self._since >= self.budget_s:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
