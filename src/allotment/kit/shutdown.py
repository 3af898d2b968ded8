"""Hear the server's exit signal before it waits for the requests in flight to finish.

uvicorn, told to stop (SIGINT, SIGTERM), stops accepting connections and waits for every
running request, and only then runs the app's lifespan shutdown. A request that never ends
by itself (a stream) would make it wait forever. `on_exit_signal(callback)` puts a handler
in front of the one the server installed (uvicorn installs its own with `signal.signal`
before the lifespan starts): it schedules `callback` in the app's event loop, then calls
the server's handler, whose behaviour is unchanged. Where the current handler is not a
Python callable (the default action, ignored, or another thread than the main one), there is
no graceful drain to join, and nothing is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_exit_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in the running loop when SIGINT or SIGTERM arrives; returns the undo
    (which restores the previous handler if this one is still installed)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Any, Any]] = {}

    for number in SIGNALS:
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing to end
                loop.call_soon_threadsafe(callback)
            previous(signum, frame)

        signal.signal(number, handler)
        installed[number] = (handler, previous)

    def undo() -> None:
        for number, (handler, previous) in installed.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, previous)

    return undo
