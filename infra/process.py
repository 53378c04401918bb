"""Start, find and stop a long-running child process through a pid file.

Kafka and Redis are both run this way, so the pid-file rules live here once:
a pid file whose process is gone (or is some other program) is stale and removed,
which is how ``stack up`` recovers after a crash or a reboot.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.errors import StackError

LOG_ROTATE_BYTES = 32 * 2**20  # a service's log past this is set aside at its next start


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass(frozen=True)
class ManagedProcess:
    """A background process owned by the stack, identified by its pid file.

    ``marker`` is a string that must appear in the process command line; it stops
    us from signalling an unrelated process that reused a stale pid. ``settings``, when
    given, must appear too for the process to serve the current settings (a port):
    one started with others is still ours to stop, never to reuse. ``workdir``, when
    given, must be the process's working folder: for a process whose command line cannot
    tell ours from another's (Redis rewrites its to ``redis-server host:port``, so a stale
    pid naming the system's Redis read as ours, and ``stack down`` stopped it).
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str
    settings: str = ""
    workdir: Path | None = None

    def pid(self) -> int | None:
        """The live pid, or None; removes a stale pid file as a side effect."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _alive(pid) and self.marker in _cmdline(pid) and self._works_here(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _works_here(self, pid: int) -> bool:
        """Whether ``pid`` works in ``workdir`` (always, without one); a process we may not
        inspect (another user's) is not ours."""
        if self.workdir is None:
            return True
        try:
            return Path(f"/proc/{pid}/cwd").resolve(strict=True) == self.workdir.resolve()
        except OSError:
            return False

    def serving_pid(self) -> int | None:
        """The live pid when it runs with the current settings; one line when it runs
        with others (a port changed since ``stack up``): starting another beside it
        would leave it running with no pid file."""
        pid = self.pid()
        if pid is not None and self.settings not in _cmdline(pid).split():  # whole words:
            # port 1637 is not 16379
            raise StackError(f"{self.name} from an earlier start is running with other "
                             f"settings (pid {pid}, not {self.settings}): run "
                             "'streamrec stack down' first")
        return pid

    def spawn(self, argv: list[str], cwd: Path | None = None) -> int:
        """Start argv detached from our session, its output appended to the log file,
        which only we may read: a service that refuses its configuration may print the
        offending line, a password in it (Redis does, for its ACL lines)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_log()
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a log made before this rule
        with open(fd, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _rotate_log(self) -> None:
        """Past ``LOG_ROTATE_BYTES`` the log becomes ``<name>.1`` (replacing the one
        before) and the service starts a new one: it grew at every start, for ever. A
        running service keeps its file until it restarts."""
        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        try:  # it may exit between our look and each signal: stopped all the same
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if not _alive(pid):
                    break
                _reap(pid)
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        except ProcessLookupError:
            pass
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_ready(self, pid: int, probe: Callable[[], bool], timeout_s: float) -> None:
        """Poll probe() until it answers True; fail fast if the process dies first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                _reap(pid)
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited during start-up; last log lines "
                    f"({self.log_file}):\n{self.log_tail()}"
                )
            if probe():
                return
            time.sleep(0.25)
        raise StackError(
            f"{self.name} did not answer within {timeout_s:.0f} s; see {self.log_file}"
        )


def _reap(pid: int) -> None:
    """Collect an exited child of ours so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@contextmanager
def exclusive(lock_file: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (None: no lock), waiting for another
    holder: two ``stack up`` at once (``make demo`` and ``make test`` in two terminals)
    would each find nothing running, both spawn, and leave one broker without a pid file."""
    if lock_file is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
