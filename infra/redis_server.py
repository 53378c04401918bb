"""A local ``redis-server`` (Debian's package) on a loopback port, AOF on."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.errors import StackError
from infra.process import ManagedProcess, port_in_use

INSTALL_HINT = (
    "redis-server was not found: install it with "
    "'sudo apt-get update && sudo apt-get install -y redis-server' "
    "(the Makefile does this when run as root), or set STREAMREC_REDIS_URL to an existing Redis"
)


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class LocalRedis:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Redis",
            pid_file=self.home / "redis.pid",
            log_file=self.home / "redis.log",
            marker=f"127.0.0.1:{self.port}",
        )

    def running_pid(self) -> int | None:
        return self.process.pid()

    def start(self, timeout_s: float = 20.0) -> int:
        pid = self.running_pid()
        if pid is not None:
            return pid
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(INSTALL_HINT)
        if port_in_use(self.port):
            raise StackError(
                f"port {self.port} is in use by another process; stop it or set STREAMREC_REDIS_PORT"
            )
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(data),
                "--appendonly", "yes", "--daemonize", "no", "--save", "",
                "--protected-mode", "yes"]
        proc = self.process
        pid = proc.spawn(argv)
        proc.wait_ready(pid, lambda: redis_answers(self.url), timeout_s)
        return pid

    def stop(self) -> bool:
        return self.process.stop()
