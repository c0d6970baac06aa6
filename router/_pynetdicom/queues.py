"""A queue that says when something was put on it (the event-driven loops of ``reactor`` wait on that)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any


class WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` whenever something is put on it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()
