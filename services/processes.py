"""``streamrec`` services (worker, trainer, api) as child processes, for the demo, the
benchmarks and the tests.

Output goes to a file, never to a pipe: an undrained pipe fills and blocks the worker.
What a service is doing is read from its status file (``streams.status``), never from its
output: the log is for people and may change wording at any time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError

from infra.kafka_client import KafkaConnection
from services.settings import Settings
from streams.status import Record, RoundSummary, TrainerStatus, read_status

CLI = [sys.executable, "-m", "services.cli"]


def isolated_run(settings: Settings, run: str) -> dict[str, str]:
    """Creates topics ``<run>.interactions`` (and .dlq, .recommendations, .model-updates,
    .items, .experiments) and returns the environment that points workers at them, in consumer group
    ``<run>``, publishing on Redis channel ``<run>.recs``: a demo or benchmark run then
    counts only its own events."""
    from infra.topics import ensure_topics

    names = {"topic_interactions": f"{run}.interactions", "topic_dlq": f"{run}.dlq",
             "topic_recommendations": f"{run}.recommendations",
             "topic_model_updates": f"{run}.model-updates", "topic_items": f"{run}.items",
             "topic_experiments": f"{run}.experiments",
             "worker_group": run, "recs_channel": f"{run}.recs"}
    ensure_topics(settings.kafka, settings.model_copy(update=names).topics())
    return {f"STREAMREC_{key.upper()}": value for key, value in names.items()}


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it, else a port the system picks as free."""
    import socket

    with socket.socket() as probe:
        if preferred is not None:
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Answers from a broker that has just started, while it loads its group coordinator.
_COORDINATOR_NOT_READY = frozenset({KafkaError.NOT_COORDINATOR,
                                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                    KafkaError.COORDINATOR_NOT_AVAILABLE})


class WorkerFailed(RuntimeError):
    """A service exited (a ``trainer --once`` round failed), never joined its consumer
    group or never answered."""


def trainer_round(env: dict[str, str], status: Path, *args: str,
                  timeout_s: float | None = None) -> RoundSummary:
    """Runs ``streamrec trainer --once <args>`` and returns the round it reported in its
    status file at ``status``. Raises ``WorkerFailed``, with the end of its output, when
    the round failed (exit code 1) or the trainer reported none."""
    status.unlink(missing_ok=True)  # a record left by an earlier run must not answer
    done = subprocess.run([*CLI, "trainer", "--once", "--status-file", str(status), *args],
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    record = read_status(status, TrainerStatus)
    if done.returncode != 0 or record is None or record.last_round is None:
        raise WorkerFailed(f"streamrec trainer --once exited with code {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    return record.last_round


@dataclass
class ServiceProcess:
    proc: subprocess.Popen
    log: Path
    status: Path | None = None  # where the service keeps its status record, if asked to

    @classmethod
    def start(cls, env: dict[str, str], log: Path, command: str, *args: str,
              status: bool = False) -> ServiceProcess:
        """``streamrec <command> <args>`` with its output appended to ``log``. With
        ``status`` (worker, trainer) it keeps its status record in ``<log>.status.json``,
        which ``wait_status`` reads."""
        path = log.with_name(f"{log.name}.status.json") if status else None
        if path is not None:
            path.unlink(missing_ok=True)  # a record left by an earlier run must not answer
            args = (*args, "--status-file", str(path))
        with open(log, "ab") as handle:
            proc = subprocess.Popen([*CLI, command, *args], env=env, stdout=handle,
                                    stderr=subprocess.STDOUT)
        return cls(proc, log, path)

    def wait_joined(self, kafka: KafkaConnection, group: str, timeout_s: float = 120,
                    members: int = 1) -> None:
        """Until the consumer group is stable with ``members`` members, i.e. the workers own
        their partitions and events produced from now on are answered."""
        from confluent_kafka import ConsumerGroupState, KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(kafka.librdkafka())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.raise_if_exited()
            try:
                desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
            except TimeoutError:  # a busy or just-started broker: ask again until the deadline
                continue
            except KafkaException as exc:  # a broker just started: coordinator not ready
                error = exc.args[0]
                if not (error.retriable() or error.code() in _COORDINATOR_NOT_READY):
                    raise
            else:
                if desc.state == ConsumerGroupState.STABLE and len(desc.members) >= members:
                    return
            time.sleep(0.5)
        raise WorkerFailed(f"the worker did not join group {group} within {timeout_s:.0f} s; "
                           f"log {self.log}")

    def raise_if_exited(self) -> None:
        """Raises ``WorkerFailed``, with the end of its log, once the process has exited."""
        if self.proc.poll() is not None:
            raise WorkerFailed(f"streamrec {self.proc.args[len(CLI)]} exited with code "
                               f"{self.proc.returncode}; log {self.log}:\n"
                               f"{self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def current_status(self, kind: type[Record]) -> Record | None:
        """The service's status record as it stands, None before it has written one."""
        if self.status is None:
            raise ValueError(f"{self.log}: the service was started without status=True")
        return read_status(self.status, kind)

    def wait_status(self, kind: type[Record], until: Callable[[Record], bool] | None = None,
                    timeout_s: float = 60) -> Record | None:
        """The first status record for which ``until`` holds (any record without it),
        polled for up to ``timeout_s``; None if none came in time. Raises ``WorkerFailed``
        once the process has exited without writing one."""
        deadline = time.monotonic() + timeout_s
        while True:
            exited = self.proc.poll() is not None  # before reading: its last word counts
            record = self.current_status(kind)
            if record is not None and (until is None or until(record)):
                return record
            if exited:
                self.raise_if_exited()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)

    def wait_http(self, url: str, timeout_s: float = 60) -> None:
        """Until ``url`` answers 200 (a service's health route)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.raise_if_exited()
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise WorkerFailed(f"{url} did not answer within {timeout_s:.0f} s; log {self.log}")

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def peak_rss_mib(self) -> float:
        """Peak resident memory so far (Linux ``VmHWM``)."""
        return self._status("VmHWM") / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_s: float = 60) -> str:
        """SIGTERM (a worker shuts down cleanly and commits), SIGKILL after ``timeout_s``;
        returns the process's output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()
