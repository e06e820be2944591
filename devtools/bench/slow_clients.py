"""Slow clients for the benchmark: connections that send a request's headers a byte at a time.

A bad mobile link, or someone holding connections on purpose (slowloris), looks like this to the
server. Each of ``count`` connections sends one more byte of :data:`HEADERS` every ``interval``
seconds; a connection the server closes (it answered or cut it off) is opened again at once, so
that ``count`` are held for as long as the clients run. All of it runs in one thread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field

# Never complete: 4 KiB of one header at a byte per interval outlasts any measurement.
HEADERS = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4096


@dataclass
class SlowClients:
    """``count`` connections to ``host``:``port`` trickling :data:`HEADERS`."""

    host: str
    port: int
    count: int = 50
    interval: float = 0.5
    rounds: int = 0  # byte rounds sent to every open connection so far
    opened: int = 0  # connections opened, the first ``count`` included
    cut_off: int = 0  # connections the server closed (or refused) while they trickled
    _sent: dict[socket.socket, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SlowClients:
        self._selector = selectors.DefaultSelector()
        for _ in range(self.count):
            self._open()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop trickling and close every connection (the server sees them end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for sock in list(self._sent):
            self._close(sock)
        self._selector.close()

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ)
        self._sent[sock] = 0
        self.opened += 1

    def _close(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._sent[sock]
        sock.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for sock, sent in list(self._sent.items()):
                try:
                    sock.send(HEADERS[sent % len(HEADERS) : sent % len(HEADERS) + 1])
                    self._sent[sock] = sent + 1
                except OSError:
                    self._replace(sock)
            for key, _ in self._selector.select(0):
                self._replace(key.fileobj)  # type: ignore[arg-type]
            self.rounds += 1

    def _replace(self, sock: socket.socket) -> None:
        """The server answered or closed ``sock``: count it and open another."""
        if sock not in self._sent:
            return
        self._close(sock)
        self.cut_off += 1
        # If the server refuses connections, fewer are held: cut_off counts them.
        with contextlib.suppress(OSError):
            self._open()
