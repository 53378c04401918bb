"""A single-node KRaft Kafka broker run from Maven Central jars with the machine's Java.

Layout under ``home`` (by default ``.local/kafka``)::

    libs-<version>-<pom>/  jars resolved by Maven once, reused by every later start
    data/               KRaft log dirs, formatted once with a generated cluster id
    server.properties   written on every start from the ports we were given
    kafka.log, kafka.pid
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from infra.errors import CREDENTIALS_REFUSED, StackError
from infra.java import check_java, maven_binary
from infra.kafka_client import KafkaConnection
from infra.process import ManagedProcess, port_in_use
from infra.tls import TlsFiles, private_dir, write_file

_MAIN_CLASS = "kafka.Kafka"
_REFUSALS = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}
_JARS_DONE = ".complete"
MAVEN_TIMEOUT_S = 900  # the first resolution fetches ~40 jars; a stall must not hang CI


def server_properties(port: int, controller_port: int, data_dir: Path,
                      client: KafkaConnection | None = None, tls: TlsFiles | None = None,
                      controller_secret: str = "") -> str:
    """Broker config for one combined broker+controller node on loopback.

    The client listener speaks ``client``'s security protocol, so the broker accepts
    exactly the clients configured to use it. The controller listener stays on loopback;
    when clients must authenticate, it does too, with ``controller_secret`` (the node's
    own, new at every start): KRaft controllers also answer admin requests (create and
    delete topics, alter configs) from any client that names them as
    ``bootstrap.controllers``, which a plaintext listener would take from anyone on the
    machine. Every internal topic is set to one replica: the defaults (3) cannot be met
    by one node, and the internal topics would then never be created.
    """
    name = client.protocol if client is not None else "PLAINTEXT"
    controller = "SASL_PLAINTEXT" if client is not None and client.uses_sasl else "PLAINTEXT"
    return _java_escaped("\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners={name}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={name}://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map=CONTROLLER:{controller},{name}:{name}",
            f"inter.broker.listener.name={name}",
            *(_security_lines(client, tls) if client is not None else []),
            *(_controller_lines(controller_secret) if controller != "PLAINTEXT" else []),
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ]
    ))


def _java_escaped(text: str) -> str:
    """``text`` with every non-ASCII character as ``\\uXXXX`` (UTF-16 units): Kafka reads
    its properties as ISO-8859-1, so a data dir under ``/home/zoë`` written as UTF-8 named
    a folder that does not exist, and a non-ASCII password another password."""
    units = text.encode("utf-16-be")
    return "".join(chr(unit) if unit < 128 else f"\\u{unit:04x}"
                   for unit in (int.from_bytes(units[i:i + 2]) for i in range(0, len(units), 2)))


def _security_lines(client: KafkaConnection, tls: TlsFiles | None) -> list[str]:
    """The client listener's SASL user (the configured client's own) and TLS key pair."""
    lines = []
    if client.uses_sasl:
        if client.mechanism != "PLAIN":
            raise StackError("the embedded broker supports sasl.mechanism PLAIN only; "
                             f"got {client.mechanism} (use your own cluster for SCRAM)")
        user, password = client.get("sasl.username") or "", client.get("sasl.password") or ""
        if not _quotable(password):
            raise StackError("the embedded broker's sasl.password must have no spaces, "
                             "quotes, backslashes, ';' or '='")
        # It also names a JAAS option (``user_<name>``), a word to Kafka's tokenizer: "@",
        # ":", "+" or "/" ended it, and the broker exited at start ("user_svc").
        if not re.fullmatch(r"[A-Za-z0-9._$-]+", user):
            raise StackError("the embedded broker's sasl.username must be letters, digits, "
                             "'.', '_', '$' or '-'")
        listener = client.protocol.lower()
        lines += ["sasl.enabled.mechanisms=PLAIN", "sasl.mechanism.inter.broker.protocol=PLAIN",
                  f"listener.name.{listener}.plain.sasl.jaas.config="
                  "org.apache.kafka.common.security.plain.PlainLoginModule required "
                  f'username="{user}" password="{password}" user_{user}="{password}";']
    if client.uses_tls:
        if tls is None:
            raise StackError(f"{client.protocol} needs TLS files for the embedded broker")
        lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={tls.keystore}",
                  "ssl.truststore.type=PEM", f"ssl.truststore.location={tls.ca}"]
    return lines


def _quotable(value: str) -> bool:
    """Whether ``value`` can stand quoted in a JAAS line as it is: no spaces, quotes,
    backslashes, ';' or '='."""
    return not any(c.isspace() or c in "\"'\\;=" for c in value)


def _controller_lines(secret: str) -> list[str]:
    """The controller listener's SASL PLAIN user, which only this node knows."""
    if not secret or not _quotable(secret):
        raise StackError("the controller listener needs a secret without spaces, quotes, "
                         "backslashes, ';' or '='")
    return ["sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="controller" password="{secret}" user_controller="{secret}";']


@dataclass(frozen=True)
class LocalKafka:
    """The embedded broker: resolve jars, format storage, start, probe and stop."""

    home: Path
    port: int
    controller_port: int
    version: str
    heap: str = "1g"
    client: KafkaConnection | None = None  # how clients connect; None: plaintext

    @property
    def connection(self) -> KafkaConnection:
        return self.client or KafkaConnection(f"127.0.0.1:{self.port}")

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.home / "tls")

    @property
    def libs(self) -> Path:
        """The jars' folder, named by the Kafka version and the pom's contents: named by
        the version alone, a pom changed by a pull (a log4j security bump) never reached a
        clone that had resolved the jars once."""
        pom = (resources.files("infra") / "kafka" / "pom.xml").read_bytes()
        return self.home / f"libs-{self.version}-{hashlib.sha256(pom).hexdigest()[:8]}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Kafka broker",
            pid_file=self.home / "kafka.pid",
            log_file=self.home / "kafka.log",
            marker=str(self.home / "server.properties"),
        )

    def ensure_jars(self) -> Path:
        """Resolve the broker jars with Maven once; later calls reuse the cache."""
        if (self.libs / _JARS_DONE).exists():
            return self.libs
        mvn = maven_binary()
        pom = resources.files("infra") / "kafka" / "pom.xml"
        self.libs.mkdir(parents=True, exist_ok=True)
        # -C: a jar whose checksum does not match fails rather than warns. The timeout
        # bounds a stalled download (Maven's own read timeout is 30 minutes), which would
        # hold the stack lock and every other `stack up` with it.
        try:
            result = subprocess.run(
                [mvn, "-B", "-q", "-C", "-f", str(pom), "dependency:copy-dependencies",
                 f"-Dkafka.version={self.version}", f"-DoutputDirectory={self.libs}"],
                capture_output=True, text=True, check=False, timeout=MAVEN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"Maven did not resolve the Kafka jars within {MAVEN_TIMEOUT_S} s; "
                             "is Maven Central reachable? (try again: what it fetched stays "
                             "in ~/.m2)") from None
        if result.returncode != 0 or not any(self.libs.glob("kafka_2.13-*.jar")):
            lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
            reason = lines[0] if lines else f"exit code {result.returncode}"
            raise StackError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{self.version}: {reason}"
            )
        (self.libs / _JARS_DONE).touch()
        return self.libs

    def _java_argv(self, java: str, main: str, *args: str) -> list[str]:
        log4j = resources.files("infra") / "kafka" / "log4j2.properties"
        return [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs}/*", main, *args]

    def _write_config(self) -> Path:
        private_dir(self.home)
        props = self.home / "server.properties"
        tls = self.tls.ensure() if self.connection.uses_tls else None
        text = server_properties(self.port, self.controller_port, self.home / "data",
                                 self.connection, tls, secrets.token_urlsafe(24))
        write_file(props, text.encode(), private=True)  # may hold a password
        return props

    def _format_storage(self, java: str, props: Path) -> None:
        """Format the KRaft log dir once; an already formatted dir is kept as is."""
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        result = subprocess.run(
            self._java_argv(java, "kafka.tools.StorageTool", "format",
                            f"--cluster-id={cluster_id}", "-c", str(props)),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {result.stderr.strip()[-300:]}")

    def running_pid(self) -> int | None:
        return self.process.pid()

    def start(self, timeout_s: float = 60.0) -> int:
        """Start the broker (or return the pid of the one already running, refused in one
        line when it listens on other ports: its command line names only its config)."""
        pid = self.running_pid()
        if pid is not None:
            if not self._runs_as_configured():
                raise StackError(f"the Kafka broker from an earlier start is running with "
                                 f"other ports or security (pid {pid}; ports {self.port} and "
                                 f"{self.controller_port}, {self.connection.protocol} wanted): "
                                 "run 'streamrec stack down' first")
            return pid
        if "," in str(self.home):  # log.dirs is a list: the broker would write elsewhere
            raise StackError(f"the Kafka data folder {self.home} has a ',' in its path, which "
                             "Kafka reads as two folders; set STREAMREC_DATA_DIR to another")
        java = check_java()
        self.ensure_jars()
        props = self._write_config()
        self._format_storage(java, props)
        # Checked last, just before the start: checked before Maven's first resolve (up to
        # 15 minutes), a broker that took the port meanwhile answered our readiness probe,
        # and the stack ran on another's broker, reported as ours.
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise StackError(
                    f"port {port} is in use by another process; stop it or choose other ports "
                    "with STREAMREC_KAFKA_PORT / STREAMREC_KAFKA_CONTROLLER_PORT"
                )
        proc = self.process
        pid = proc.spawn(self._java_argv(java, _MAIN_CLASS, str(props)), cwd=self.home)
        proc.wait_ready(pid, lambda: broker_answers(self.connection), timeout_s)
        return pid

    def stop(self) -> bool:
        return self.process.stop()

    def _runs_as_configured(self) -> bool:
        """Whether the running broker's config is the one these settings write, but for
        the controller's secret (new at every start). Ports alone were compared: a broker
        started secured, then ``stack up`` without security, was reused, and plaintext
        clients waited 90 s on its TLS listener; a changed password read as refused."""
        def kept(text: str) -> list[str]:
            return sorted(line for line in text.splitlines()
                          if not line.startswith("listener.name.controller."))

        try:
            running = (self.home / "server.properties").read_text()
        except OSError:
            return False
        tls = self.tls if self.connection.uses_tls else None  # paths only: never renewed here
        return kept(running) == kept(server_properties(
            self.port, self.controller_port, self.home / "data", self.connection, tls, "-"))


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's ``Uuid.randomUuid()``, never one starting with '-': a command line
    would read it as an option (1 in 64 ids would).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def broker_answers(kafka: KafkaConnection, timeout_s: float = 2.0) -> bool:
    """True when the cluster returns metadata to these credentials."""
    return probe_broker(kafka, timeout_s) is None


def probe_broker(kafka: KafkaConnection, timeout_s: float = 2.0) -> str | None:
    """None when the cluster answers; else why not. A refused login or TLS handshake
    is named as such: retrying cannot fix it, so callers stop at once."""
    from confluent_kafka.admin import AdminClient

    refused: list[str] = []

    def on_error(err: Any) -> None:
        if err.code() in _REFUSALS:
            refused.append(err.str())

    admin = AdminClient(kafka.librdkafka(log_level=0, logger=_silent_logger(),
                                         error_cb=on_error))
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not answering yet"
        admin.poll(0)  # serves the error callbacks, which say whether the login failed
        return f"{CREDENTIALS_REFUSED}: {refused[0]}" if refused else str(exc)
    admin.poll(0)  # else librdkafka logs the unserved error events as it closes
    return None if meta.brokers else "no broker in the metadata"


def _silent_logger() -> logging.Logger:
    """librdkafka logs connection refusals while we poll a starting broker; drop them."""
    logger = logging.getLogger("streamrec.kafka.probe")
    logger.setLevel(logging.CRITICAL)
    return logger


def wait_for_broker(kafka: KafkaConnection, timeout_s: float) -> None:
    """Wait until the cluster answers; a refused login fails at once, in one line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        problem = probe_broker(kafka)
        if problem is None:
            return
        if problem.startswith(CREDENTIALS_REFUSED):
            raise StackError(f"Kafka at {kafka.bootstrap}: {problem}")
        time.sleep(0.5)
    raise StackError(f"Kafka at {kafka.bootstrap} did not answer within {timeout_s:.0f} s")
