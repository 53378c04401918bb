"""The stack's failure paths that need no broker: clear one-line errors, stale pid files."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from infra.errors import StackError
from infra.java import check_java, parse_java_major
from infra.kafka_broker import _kafka_uuid, server_properties
from infra.kafka_client import KafkaConnection
from infra.process import ManagedProcess, port_in_use
from infra.redis_server import LocalRedis


@pytest.mark.parametrize(
    ("output", "major"),
    [('openjdk version "17.0.15" 2025-04-15', 17), ('java version "1.8.0_392"', 8),
     ('openjdk version "21" 2023-09-19', 21), ("garbage", None)],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StackError, match="Java 17\\+ is needed.*apt-get install"):
        check_java()


def _fake_java(home: Path, version: str) -> Path:
    fake = home / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\necho \'java version "{version}"\' >&2\n')
    fake.chmod(0o755)
    return fake


def test_old_java_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_java(tmp_path, "1.8.0_392")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StackError, match="Java 17\\+ is needed.*1.8.0_392\"; unset JAVA_HOME"):
        check_java()


def test_an_old_java_home_gives_way_to_a_java_17_on_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GitHub's Ubuntu runners set JAVA_HOME to 11: it beat the 17 on PATH, so `stack up`
    refused to start and system-deps.sh installed 17 again at every make (a review)."""
    _fake_java(tmp_path / "jdk11", "11.0.22")
    path_java = _fake_java(tmp_path / "usr", "17.0.15")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    monkeypatch.setenv("PATH", str(path_java.parent))
    assert check_java() == str(path_java)
    deps = Path(__file__).resolve().parents[2] / "infra" / "system-deps.sh"
    java_ok = subprocess.run(  # the script's own check, on the same two
        ["bash", "-c", f"eval \"$(sed -n '/^java_ok() {{/,/^}}/p' {deps})\"; java_ok"],
        env={"JAVA_HOME": str(tmp_path / "jdk11"), "PATH": f"{path_java.parent}:/usr/bin:/bin"},
        check=False)
    assert java_ok.returncode == 0


def test_missing_redis_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StackError, match="apt-get install -y redis-server"):
        LocalRedis(tmp_path, 16999).start()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
        with pytest.raises(StackError, match=f"port {port} is in use"):
            LocalRedis(tmp_path, port).start()


def _proc(tmp_path: Path, marker: str = "streamrec-test-sleep") -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "p.pid", tmp_path / "p.log", marker)


def test_stale_pid_files_are_removed(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    proc.pid_file.write_text(str(dead.pid))
    assert proc.pid() is None and not proc.pid_file.exists()
    # A live process that is not ours (pid reused) is not claimed either.
    proc.pid_file.write_text(str(os.getpid()))
    assert proc.pid() is None and not proc.pid_file.exists()


def test_a_process_in_another_folder_is_not_ours_to_stop(tmp_path: Path) -> None:
    """Redis's command line reads ``redis-server host:port`` whoever started it: a stale
    pid naming the system's Redis read as ours, and ``stack down`` sent it SIGTERM."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=theirs)
    try:
        proc = ManagedProcess("Redis", tmp_path / "p.pid", tmp_path / "p.log", "import time",
                              workdir=ours)
        proc.pid_file.write_text(str(other.pid))
        assert proc.pid() is None and proc.stop() is False and other.poll() is None
        proc.pid_file.write_text(str(other.pid))
        assert replace(proc, workdir=theirs).pid() == other.pid
    finally:
        other.kill()
        other.wait()


def test_spawn_then_stop_leaves_no_process(tmp_path: Path) -> None:
    proc = _proc(tmp_path, marker="import time")
    pid = proc.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    assert proc.pid() == pid
    assert proc.stop() is True
    assert proc.pid() is None and not Path(f"/proc/{pid}").exists()
    assert proc.stop() is False
    assert proc.log_file.stat().st_mode & 0o777 == 0o600  # it may hold a refused password


def test_a_process_that_exits_as_it_is_stopped_counts_as_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gone between ``pid()`` and the SIGTERM, it raised ``ProcessLookupError``: the pid
    file stayed, and ``stack down`` never reached Kafka after Redis (a review)."""
    proc = _proc(tmp_path, marker="import time")
    pid = proc.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    found = ManagedProcess.pid

    def exits_meanwhile(self: ManagedProcess) -> int | None:
        seen = found(self)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # reaped: the pid names no process now
        return seen

    monkeypatch.setattr(ManagedProcess, "pid", exits_meanwhile)
    assert proc.stop() is True and not proc.pid_file.exists()


def test_a_services_long_log_is_set_aside_at_its_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka's and Redis's logs were appended to at every start, without end."""
    monkeypatch.setattr("infra.process.LOG_ROTATE_BYTES", 100)
    proc = _proc(tmp_path, marker="print")
    proc.log_file.write_text("old line\n" * 20)  # 180 bytes
    proc.wait_ready(proc.spawn([sys.executable, "-c", "print('started')"]), lambda: True, 10)
    assert (tmp_path / "p.log.1").read_text() == "old line\n" * 20
    deadline = time.monotonic() + 10
    while "started" not in proc.log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.log_file.read_text() == "started\n"
    proc.spawn([sys.executable, "-c", "print('again')"])  # short: kept, appended to
    assert proc.log_file.read_text().startswith("started\n")


def test_wait_ready_fails_fast_when_the_process_dies(tmp_path: Path) -> None:
    proc = _proc(tmp_path, marker="boom")
    pid = proc.spawn([sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"])
    with pytest.raises(StackError, match="exited during start-up(.|\n)*boom: bad config"):
        proc.wait_ready(pid, lambda: False, timeout_s=10)


def test_wait_ready_times_out_with_a_pointer_to_the_log(tmp_path: Path) -> None:
    proc = _proc(tmp_path, marker="import time")
    pid = proc.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(StackError, match="did not answer within 1 s; see .*p.log"):
            proc.wait_ready(pid, lambda: False, timeout_s=1)
    finally:
        proc.stop()


def test_server_properties_are_ascii_as_java_reads_them(tmp_path: Path) -> None:
    """Kafka reads its properties as ISO-8859-1: a data dir under /home/zoë written as
    UTF-8 named another folder. Non-ASCII goes as \\uXXXX escapes (UTF-16 units)."""
    text = server_properties(19092, 19093, tmp_path / "zoë" / "😀")
    assert text.isascii()
    line = next(x for x in text.splitlines() if x.startswith("log.dirs="))
    assert line == f"log.dirs={tmp_path}/zo\\u00eb/\\ud83d\\ude00"


def test_server_properties_fit_a_single_node(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1) for line in server_properties(19092, 19093, tmp_path).splitlines() if line
    )
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor"):
        assert props[key] == "1"


def test_cluster_ids_are_22_url_safe_chars_never_starting_with_a_dash() -> None:
    ids = {_kafka_uuid() for _ in range(3000)}
    assert len(ids) == 3000  # with a dash allowed, ~47 of these would start with one
    assert all(len(c) == 22 and "=" not in c and not c.startswith("-") for c in ids)


def test_stack_up_waits_for_an_external_redis_then_says_why_in_one_line() -> None:
    from infra.redis_server import wait_for_redis

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StackError, match=r"Redis at redis://u:\*\*\*@127.0.0.1:\d+/0: .*") as info:
        wait_for_redis(f"redis://u:pw@127.0.0.1:{port}/0", timeout_s=1.0)
    assert "\n" not in str(info.value) and ":pw@" not in str(info.value)


def test_stack_up_holds_the_lock_and_waits_for_each_external_service_in_order(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The helpers are tested on their own above; this is ``up`` calling them: under the
    stack's lock, the broker, an external Redis and an MLflow server each waited for
    before the topics are made."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    import infra.stack as stack_module
    from infra.stack import Stack

    calls: list[str] = []

    @contextmanager
    def exclusive(lock: Path | None):  # noqa: ANN202 - a context manager
        calls.append(f"lock {lock.name if lock else None}")
        yield
        calls.append("unlock")

    monkeypatch.setattr(stack_module, "exclusive", exclusive)
    monkeypatch.setattr(stack_module, "wait_for_broker", lambda kafka, s: calls.append("kafka"))
    monkeypatch.setattr(stack_module, "wait_for_redis", lambda url: calls.append(f"redis {url}"))
    monkeypatch.setattr(stack_module, "wait_for_mlflow", lambda store: calls.append("mlflow"))
    monkeypatch.setattr(stack_module, "ensure_topics",
                        lambda kafka, topics: calls.append("topics") or [])
    server = SimpleNamespace(is_local=False, ensure=lambda: calls.append("ensure"))
    Stack(KafkaConnection("b:9092"), "redis://cache:6379/0", server, [],  # type: ignore[arg-type]
          lock_file=tmp_path / "stack.lock").up()
    assert calls == ["lock stack.lock", "kafka", "redis redis://cache:6379/0", "ensure",
                     "mlflow", "topics", "unlock"]


def test_a_second_stack_up_waits_for_the_first(tmp_path: Path) -> None:
    import threading
    import time

    from infra.process import exclusive

    lock, order = tmp_path / "stack.lock", []

    def second() -> None:
        with exclusive(lock):
            order.append("second")

    with exclusive(lock):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.5)  # unlocked, the second would have run by now
        order.append("first")
    other.join(10)
    assert order == ["first", "second"]


def test_stack_down_stops_the_embedded_services_when_the_settings_now_point_elsewhere(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]],
        clean_env: pytest.MonkeyPatch) -> None:
    """An operator who exported an external cluster's address, then ran ``make clean``,
    left the embedded broker and Redis running with their directories deleted."""
    kafka_home, redis_home = tmp_path / "kafka", tmp_path / "redis"
    sleepers = {}
    for home, pid_name, marker in ((kafka_home, "kafka.pid", str(kafka_home / "server.properties")),
                                   (redis_home, "redis.pid", "127.0.0.1:16379")):
        proc = ManagedProcess(pid_name, home / pid_name, home / "log", marker)
        (home / "data").mkdir(parents=True)  # Redis works in its --dir
        sleepers[pid_name] = proc.spawn([sys.executable, "-c", "import time; time.sleep(60)",
                                         marker, "redis-server"],  # Redis's process title
                                        cwd=home / "data")
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    clean_env.setenv("STREAMREC_KAFKA_BOOTSTRAP", "broker.example:9092")
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://cache.example:6379/0")
    try:
        assert streamrec("stack", "down")[0] == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in sleepers.values())
    finally:
        for pid in sleepers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_a_service_started_with_other_settings_is_stopped_but_never_reused(
        tmp_path: Path) -> None:
    """A port changed since ``stack up``: the old process is still ours (``stack down``
    stops it), but ``up`` must not take it for the new one, or start a second beside it."""
    old = ManagedProcess("Redis", tmp_path / "p.pid", tmp_path / "p.log",
                         marker="import time", settings="127.0.0.1:16379")
    pid = old.spawn([sys.executable, "-c", "import time; time.sleep(60)", "127.0.0.1:16379"])
    moved = ManagedProcess("Redis", old.pid_file, old.log_file, marker="import time",
                           settings="127.0.0.1:16380")
    prefix = ManagedProcess("Redis", old.pid_file, old.log_file, marker="import time",
                            settings="127.0.0.1:1637")  # a port whose digits begin the old
    try:
        assert old.serving_pid() == pid
        for other in (moved, prefix):
            with pytest.raises(StackError, match="running with other settings .* stack down"):
                other.serving_pid()
        assert moved.pid_file.exists() and moved.stop()  # still ours to stop
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def test_a_broker_running_on_other_ports_is_named_not_taken_for_the_new_one(
        tmp_path: Path) -> None:
    """``stack up`` after STREAMREC_KAFKA_PORT changed: the old broker was returned as the
    new one, and the probe then waited 90 s on a port nothing listened on. Likewise after
    its security changed (only ports were compared)."""
    from infra.kafka_broker import LocalKafka, server_properties

    old = LocalKafka(tmp_path, 19092, 19093, version="0.0.0")
    (tmp_path / "server.properties").write_text(
        server_properties(19092, 19093, tmp_path / "data", old.connection, None))
    pid = old.process.spawn([sys.executable, "-c", "import time; time.sleep(60)",
                             str(tmp_path / "server.properties")])
    secured = KafkaConnection("127.0.0.1:19092", {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "shop", "sasl.password": "hunter2"})
    try:
        assert old.start() == pid
        with pytest.raises(StackError, match="running with other ports or security .* "
                                             "stack down"):
            LocalKafka(tmp_path, 29092, 19093, version="0.0.0").start()
        # The same ports, now secured: plaintext clients would wait on a SASL listener.
        with pytest.raises(StackError, match="SASL_PLAINTEXT wanted"):
            LocalKafka(tmp_path, 19092, 19093, version="0.0.0", client=secured).start()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)



def test_the_stacks_data_folders_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Data at rest (Kafka's logs, Redis's append-only file, MLflow's database, the
    workers' sessions) was 0755/0644 under the default umask: SASL and ACLs guard the
    wire, not the files. A folder made before this rule is narrowed too."""
    from infra.mlflow_store import MlflowStore
    from infra.tls import private_dir
    from services.cli_worker import _worker_config
    from services.settings import Settings

    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    assert private_dir(old).stat().st_mode & 0o777 == 0o700
    assert private_dir(tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    MlflowStore.local(tmp_path / "mlflow").ensure()
    assert (tmp_path / "mlflow").stat().st_mode & 0o777 == 0o700
    _worker_config(Settings(data_dir=tmp_path / "data"), "1", None)
    assert (tmp_path / "data" / "workers").stat().st_mode & 0o777 == 0o700


def test_mlflow_download_bars_are_off_in_a_log_unless_asked(tmp_path, monkeypatch):
    """A worker's log is not a terminal: MLflow's progress bars wrote carriage-return
    noise into it at each model load. An operator's explicit setting still wins."""
    import io

    from infra.mlflow_store import MLFLOW_PROGRESS_BARS, MlflowStore

    store = MlflowStore.local(tmp_path)
    for name in ("set_tracking_uri", "set_registry_uri"):  # no global store for other tests
        monkeypatch.setattr(f"mlflow.{name}", lambda uri: None)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.delenv(MLFLOW_PROGRESS_BARS, raising=False)
    store.activate()
    assert os.environ[MLFLOW_PROGRESS_BARS] == "false"
    monkeypatch.setenv(MLFLOW_PROGRESS_BARS, "true")
    store.activate()
    assert os.environ[MLFLOW_PROGRESS_BARS] == "true"


def test_a_tracking_uri_with_credentials_never_reaches_stdout(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """MLflow writes each run's link to stdout with the URI's host part, password and all
    (``TrackingServiceClient._log_url``), past every log mask; a store whose URI carries
    credentials turns that off. One without them leaves MLflow's default."""
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    from infra.mlflow_store import MLFLOW_PRINTS_URLS, MlflowStore

    monkeypatch.setenv(MLFLOW_PRINTS_URLS, "false")  # restored after the test
    MlflowStore("http://mlflow.internal:5000", tmp_path).client()
    assert not MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()
    MlflowStore("http://alice:s3cret@mlflow.internal:5000", tmp_path).client()
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get()


def test_a_broker_that_does_not_answer_a_topic_request_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare ``TimeoutError`` is an ``OSError``, so the command line printed it, and its
    text is empty: ``error: `` and nothing more."""
    from concurrent.futures import Future

    import infra.topics
    from infra.topics import _answer

    monkeypatch.setattr(infra.topics, "_ADMIN_TIMEOUT_S", 0.05)
    silent: Future[None] = Future()
    with pytest.raises(StackError, match="Kafka did not answer within .* s when asked to "
                                         "create topic 'events'"):
        _answer(silent, "create topic 'events'")
    answered: Future[int] = Future()
    answered.set_result(3)
    assert _answer(answered, "x") == 3


def test_a_tracking_server_is_probed_once_and_stack_up_waits_for_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With MLflow's own retries a probe of a server that was down took about 4 minutes
    (``stack status``), and ``stack up`` never asked at all."""
    import infra.mlflow_store
    from infra.mlflow_store import MlflowStore, wait_for_mlflow

    seen = []

    class Down:
        def search_experiments(self, max_results: int) -> None:
            seen.append((os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
                         os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")))
            raise ConnectionError("refused")

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    store = MlflowStore("http://alice:s3cret@mlflow.internal:5000", tmp_path)
    monkeypatch.setattr(MlflowStore, "client", lambda self: Down())
    assert not store.answers() and seen == [("0", "5")]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # as it was
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "120"
    monkeypatch.setattr(infra.mlflow_store.time, "sleep", lambda s: None)
    with pytest.raises(StackError, match="MLflow at .*mlflow.internal.* did not answer") as info:
        wait_for_mlflow(store, timeout_s=0.05)
    assert "s3cret" not in str(info.value)


def test_a_database_registry_keeps_artifacts_under_our_root_and_a_server_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``postgresql://`` tracking URI got MLflow's default artifact location, ``./mlruns``
    in whichever folder the first caller ran in."""
    from infra.mlflow_store import MlflowStore

    made: dict[str, str | None] = {}

    class Client:
        def get_experiment_by_name(self, name: str) -> None:
            return None

        def create_experiment(self, name: str, artifact_location: str | None) -> str:
            made[name] = artifact_location
            return "1"

    monkeypatch.setattr(MlflowStore, "client", lambda self: Client())
    for uri in ("postgresql+psycopg2://u:pw@db/mlflow", f"sqlite:///{tmp_path / 'm.db'}",
                "https://mlflow.corp", "file:///srv/mlruns", "/srv/mlruns"):
        MlflowStore(uri, tmp_path / "artifacts").experiment_id(uri[:5])
    assert made == {"postg": (tmp_path / "artifacts" / "postg").as_uri(),
                    "sqlit": (tmp_path / "artifacts" / "sqlit").as_uri(),
                    "https": None, "file:": None, "/srv/": None}  # they decide their own


def test_the_broker_jars_are_cached_by_the_poms_contents_not_the_version_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Named by the version alone, a pom changed by a pull (a log4j security bump) never
    reached a clone that had resolved the jars once (a review)."""
    from importlib import resources

    from infra.kafka_broker import LocalKafka

    broker = LocalKafka(tmp_path, 19092, 19093, version="4.4.0")
    before = broker.libs
    assert before.parent == tmp_path and before.name.startswith("libs-4.4.0-")
    bumped = tmp_path / "pom.xml"
    bumped.write_bytes((resources.files("infra") / "kafka" / "pom.xml").read_bytes()
                       .replace(b"</project>", b"<!-- bump --></project>"))
    monkeypatch.setattr("infra.kafka_broker.resources.files", lambda package: _Bumped(bumped))
    assert broker.libs != before and broker.libs.name.startswith("libs-4.4.0-")


class _Bumped:
    """``resources.files("infra")`` whose ``kafka/pom.xml`` is another file."""

    def __init__(self, pom: Path) -> None:
        self.pom = pom

    def __truediv__(self, part: str) -> "_Bumped | Path":
        return self if part == "kafka" else self.pom


@pytest.mark.parametrize("folder", ["what?", "100%41", "a b"])
def test_the_local_mlflow_database_is_where_its_folder_is_whatever_the_name(
        tmp_path: Path, folder: str) -> None:
    """Unquoted, SQLAlchemy read ``/tmp/what?/mlflow.db`` as ``/tmp/what`` and ``%41`` as
    ``A``: the database opened elsewhere than its artifacts (a review)."""
    from sqlalchemy.engine import make_url

    from infra.mlflow_store import MlflowStore

    store = MlflowStore.local(tmp_path / folder)
    assert make_url(store.tracking_uri).database == str(tmp_path / folder / "mlflow.db")
    assert MlflowStore.sqlite(store.tracking_uri).artifact_root.parent == tmp_path / folder


def test_a_kafka_data_folder_with_a_comma_is_refused(tmp_path: Path) -> None:
    """``log.dirs`` is a list: the broker wrote beside the folder, and never found its
    formatted store again (a review)."""
    from infra.kafka_broker import LocalKafka

    with pytest.raises(StackError, match="has a ',' in its path"):
        LocalKafka(tmp_path / "work, old" / "kafka", 29092, 29093, version="0.0.0").start()


def test_the_brokers_port_is_checked_after_its_jars_resolve_just_before_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before Maven's first resolve (minutes), a broker that took the port
    meanwhile answered the readiness probe: the stack ran on another's broker (a review)."""
    import infra.kafka_broker as kafka_broker

    steps: list[str] = []
    broker = kafka_broker.LocalKafka(tmp_path, 29092, 29093, version="0.0.0")
    monkeypatch.setattr(kafka_broker, "check_java", lambda: steps.append("java") or "java")
    cls = kafka_broker.LocalKafka
    monkeypatch.setattr(cls, "ensure_jars", lambda self: steps.append("jars"))
    monkeypatch.setattr(cls, "_write_config", lambda self: steps.append("config"))
    monkeypatch.setattr(cls, "_format_storage", lambda self, java, props: steps.append("format"))
    monkeypatch.setattr(kafka_broker, "port_in_use", lambda port: steps.append("port") or True)
    with pytest.raises(StackError, match="port 29092 is in use"):
        broker.start()
    assert steps == ["java", "jars", "config", "format", "port"]
