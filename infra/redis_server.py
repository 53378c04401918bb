"""A local ``redis-server`` (Debian's package) on a loopback port, AOF on.

Asked for a password, it runs with an ACL user (the default user off); asked for TLS,
it serves TLS only, with a certificate from ``infra.tls``. Secrets go into a config
file readable by its owner, never onto the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from infra.errors import CREDENTIALS_REFUSED, StackError
from infra.process import ManagedProcess, port_in_use
from infra.tls import TlsFiles, private_dir, write_file
from infra.urls import mask_url

INSTALL_HINT = (
    "redis-server was not found: install it with "
    "'sudo apt-get update && sudo apt-get install -y redis-server' "
    "(the Makefile does this when run as root), or set STREAMREC_REDIS_URL to an existing Redis"
)


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    return probe_redis(url, timeout_s) is None


def probe_redis(url: str, timeout_s: float = 1.0) -> str | None:
    """None when the Redis at ``url`` answers PING; else why not, with a refused login or
    TLS handshake named as such (``CREDENTIALS_REFUSED``)."""
    import ssl

    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
        return None
    except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        return f"{CREDENTIALS_REFUSED}: {exc}"
    except redis.ConnectionError as exc:
        refused = isinstance(exc.__cause__ or exc.__context__, ssl.SSLError)
        return f"{CREDENTIALS_REFUSED}: {exc}" if refused else str(exc)
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()


def wait_for_redis(url: str, timeout_s: float = 30.0) -> None:
    """Wait until Redis answers; one line at once when it refuses these credentials (a
    retry cannot fix that), or when it has not answered within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (problem := probe_redis(url, timeout_s=2.0)) is not None:
        if problem.startswith(CREDENTIALS_REFUSED) or time.monotonic() > deadline:
            raise StackError(f"Redis at {mask_url(url)}: {problem}")
        time.sleep(0.5)


def server_version(binary: str) -> tuple[int, ...] | None:
    """``redis-server --version`` as numbers (``v=7.0.15`` -> (7, 0, 15)); None unread."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"v=(\d+(?:\.\d+)*)", out)
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


def _quoted(path: Path) -> str:
    """A path as a Redis config argument: quoted, since a bare one ends at a space (a repo
    under ``My Projects``), with Redis's escapes for quotes and backslashes."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class LocalRedis:
    home: Path
    port: int
    username: str = "streamrec"
    password: SecretStr | None = None
    tls: bool = False

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(self.home / "tls")

    @property
    def url(self) -> str:
        """The URL clients use, credentials included: mask it (``infra.urls``) to print."""
        scheme, auth, query = "redis", "", ""
        if self.password is not None:
            auth = f"{quote(self.username, safe='')}:{quote(self.password.get_secret_value(), safe='')}@"
        if self.tls:
            scheme, query = "rediss", f"?ssl_ca_certs={quote(str(self.tls_files.ca))}"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def write_config(self, channel_rules: bool = True) -> Path:
        """Write the ACL and TLS lines (``_config_text``), readable by their owner only."""
        if self.tls:
            self.tls_files.ensure()
        conf = self.home / "redis.conf"
        write_file(conf, self._config_text(channel_rules).encode(), private=True)
        return conf

    def _config_text(self, channel_rules: bool) -> str:
        """ACL and TLS lines: the parts of the configuration that must stay private.
        ``channel_rules``: Redis 6.2 and later gate pub/sub channels (``&*``); 6.0
        (Ubuntu 22.04's) allows them all and refuses the rule."""
        lines = []
        if self.password is not None:
            channels = " &*" if channel_rules else ""
            lines += ["user default off", f"user {self.username} on "
                      f">{self.password.get_secret_value()} ~*{channels} +@all"]
        if self.tls:
            files = self.tls_files
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {_quoted(files.cert)}",
                      f"tls-key-file {_quoted(files.key)}",
                      f"tls-ca-cert-file {_quoted(files.ca)}", "tls-auth-clients no"]
        return "\n".join([*lines, ""])

    def _runs_as_configured(self) -> bool:
        """Whether the running Redis was started with the password and TLS these settings
        ask for. Reused whatever its config, a Redis started with TLS kept plaintext
        clients waiting 30 s, and one started with another password read as refused."""
        try:
            running = (self.home / "redis.conf").read_bytes()  # as written: UTF-8
        except OSError:
            return False
        return running in (self._config_text(True).encode(), self._config_text(False).encode())

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Redis",
            pid_file=self.home / "redis.pid",
            log_file=self.home / "redis.log",
            marker="redis-server",
            settings=f"127.0.0.1:{self.port}",
            workdir=self.home / "data",  # its --dir, where Redis moves to
        )

    def running_pid(self) -> int | None:
        return self.process.serving_pid()

    def start(self, timeout_s: float = 20.0) -> int:
        pid = self.running_pid()
        if pid is not None:
            if not self._runs_as_configured():
                raise StackError(f"the Redis from an earlier start is running with another "
                                 f"password or TLS setting (pid {pid}, port {self.port}): "
                                 "run 'streamrec stack down' first")
            return pid
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(INSTALL_HINT)
        data = private_dir(self.home) / "data"
        data.mkdir(exist_ok=True)
        version = server_version(binary)  # unread: assume a current one
        conf = self.write_config(channel_rules=version is None or version >= (6, 2))
        if port_in_use(self.port):  # last before the start, as the broker's (kafka_broker)
            raise StackError(
                f"port {self.port} is in use by another process; stop it or set STREAMREC_REDIS_PORT"
            )
        argv = [binary, str(conf), "--bind", "127.0.0.1", "--dir", str(data),
                "--appendonly", "yes", "--daemonize", "no", "--save", "",
                "--protected-mode", "yes"]
        if not self.tls:
            argv += ["--port", str(self.port)]
        proc = self.process
        # Started in its data folder: ``pid()`` knows our Redis by that working folder,
        # which Redis would otherwise move to a moment after it starts, and a status read
        # in that moment took it for another's and dropped its pid file (a review).
        pid = proc.spawn(argv, cwd=data)
        try:
            proc.wait_ready(pid, lambda: redis_answers(self.url), timeout_s)
        except StackError as exc:  # its log tail may quote a refused ACL line, password too
            secret = self.password.get_secret_value() if self.password else None
            raise StackError(str(exc).replace(secret, "***") if secret else str(exc)) from None
        return pid

    def stop(self) -> bool:
        return self.process.stop()
