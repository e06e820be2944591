"""Per-process state that must not cross a fork: connection pools, random generators, threads.

gunicorn imports the app in its master and forks workers; Celery's prefork pool does the same. A
pool or generator made before the fork would be shared by every child (the same connections,
the same "random" draws), so each is made on first use in the process that uses it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """A value made by ``factory`` on first use in each process (again in a forked child)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._pid = 0
        self._lock = threading.Lock()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget(ref))

    def get(self) -> T:
        """This process's value; made now if this process has none yet."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._value = self._factory()
                    self._pid = os.getpid()
        assert self._value is not None
        return self._value

    @property
    def made(self) -> bool:
        """Whether this process has made its value."""
        return self._pid == os.getpid()


def _forget(ref: weakref.ref[PerProcess[T]]) -> None:
    value = ref()
    if value is not None:
        # A lock held by another thread at the fork stays held in the child: replace it.
        value._lock = threading.Lock()
        value._value, value._pid = None, 0
