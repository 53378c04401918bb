"""A secured stack of its own: Kafka over SASL_SSL, Redis with an ACL user over TLS, the API
with a key. Every process works through it, wrong passwords fail in one line, and no
secret of this test shows in any log or on any topic."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka.admin import AdminClient

from services.processes import CLI, ServiceProcess, free_port
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.consumer import read_topic
from streams.events import new_event

KAFKA_PASSWORD, REDIS_PASSWORD = "kafka-pw-7f3a19", "redis-pw-91bc44"
API_KEY = "api-key-55de02-b7e1c9"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, API_KEY)


def _kafka_security(password: str) -> str:
    return orjson.dumps({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                         "sasl.username": "streamrec", "sasl.password": password}).decode()


@dataclass
class Secured:
    settings: Settings
    env: dict[str, str]
    folder: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update({
        "STREAMREC_DATA_DIR": str(folder), "STREAMREC_KAFKA_PORT": str(free_port()),
        "STREAMREC_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMREC_REDIS_PORT": str(free_port()), "STREAMREC_API_PORT": str(free_port()),
        "STREAMREC_KAFKA_SECURITY": _kafka_security(KAFKA_PASSWORD),
        "STREAMREC_REDIS_PASSWORD": REDIS_PASSWORD, "STREAMREC_REDIS_TLS": "true",
        "STREAMREC_API_KEY": API_KEY, "STREAMREC_WORKER_METRICS_PORT": "0",
        "STREAMREC_WORKER_GROUP": f"secured-{uuid.uuid4().hex[:8]}",
    })
    settings = _settings(env)
    stack = build_stack(settings)
    stack.up()
    try:
        yield Secured(settings, env, folder)
    finally:
        stack.down()


def _settings(env: dict[str, str]) -> Settings:
    fields = {k.removeprefix("STREAMREC_").lower(): v for k, v in env.items()
              if k.startswith("STREAMREC_")}
    fields["kafka_security"] = orjson.loads(fields["kafka_security"])
    return load_settings(**fields)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)


def test_every_process_works_through_the_secured_stack_and_no_secret_leaks(
        secured: Secured) -> None:
    env, folder = secured.env, secured.folder
    url = f"http://127.0.0.1:{env['STREAMREC_API_PORT']}"
    worker = ServiceProcess.start(env, folder / "worker.log", "worker", status=True)
    api = ServiceProcess.start(env, folder / "api.log", "api")
    try:
        worker.wait_joined(secured.settings.kafka, env["STREAMREC_WORKER_GROUP"])
        api.wait_http(f"{url}/healthz")
        event = orjson.loads(new_event("u1", "i1", "click").to_json())
        assert httpx.post(f"{url}/v1/events", json=[event], timeout=15).status_code == 401
        sent = httpx.post(f"{url}/v1/events", json=[event], headers={"X-API-Key": API_KEY},
                          timeout=15)
        assert sent.status_code == 202, sent.text
        body = _wait_list(url, "u1", event["event_id"])
        assert body["path"] == "popularity"  # no champion yet: popularity, said once
        check, status = _cli(env, "stack", "check"), _cli(env, "stack", "status")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "(SASL_SSL)" in status.stdout and "rediss://streamrec:***@" in status.stdout
    finally:
        api.stop()
        worker.stop()
    outputs = [worker.output(), api.output(), check.stdout + check.stderr,
               status.stdout + status.stderr,
               *(p.read_text(errors="replace") for p in folder.glob("*/*.log"))]
    assert len(outputs) >= 6  # and the broker's and Redis' own logs
    for secret in SECRETS:
        assert not any(secret in text for text in outputs), f"{secret} in a log"
    records = _every_record(secured.settings)
    assert any(b"u1" in r for r in records)  # the topics were read, not empty
    for secret in SECRETS:
        assert not any(secret.encode() in r for r in records), f"{secret} on a topic"


def _wait_list(url: str, user: str, event_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/users/{user}/recommendations", timeout=10)
        if response.status_code == 200 and response.json().get("event_id") == event_id:
            return response.json()
        time.sleep(0.3)
    raise AssertionError(f"no list for {user} after {event_id}")


def _every_record(settings: Settings) -> list[bytes]:
    """Keys, values and headers of every record on every topic, internal ones included."""
    topics = AdminClient(settings.kafka.librdkafka()).list_topics(timeout=10).topics
    found = []
    for topic in topics:
        for r in read_topic(settings.kafka, topic, from_beginning=True, idle_timeout_s=3):
            headers = b"".join(k.encode() + v for k, v in r.headers.items())
            found.append((r.key or b"") + (r.value or b"") + headers)
    return found


@pytest.mark.parametrize("variable, value, said, why", [
    # The embedded services' one user is the configured client: another password means
    # the settings changed since they started, which only a restart can take.
    ("STREAMREC_KAFKA_SECURITY", _kafka_security("wrong-password"),
     "error: the Kafka broker from an earlier start is running with other ports or "
     "security", "run 'streamrec stack down' first"),
    ("STREAMREC_REDIS_PASSWORD", "wrong-password", "error: the Redis from an earlier start "
     "is running with another password", "run 'streamrec stack down' first"),
])
def test_a_wrong_password_fails_in_one_line(secured: Secured, variable: str, value: str,
                                            said: str, why: str) -> None:
    result = _cli({**secured.env, variable: value}, "stack", "up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), result.stderr
    assert why in lines[0] and "wrong-password" not in result.stderr


PROBE = Path(__file__).with_name("ControllerProbe.java")  # sets a topic's retention to 1 s


def _probe(settings: Settings, topic: str) -> subprocess.CompletedProcess[str]:
    """Alter ``topic`` through the controller listener, with no credentials, as any
    program on the machine could (Kafka's Admin client with ``bootstrap.controllers``)."""
    from infra.java import check_java

    libs = settings.local_kafka().libs
    return subprocess.run([check_java(), "-cp", f"{libs}/*", str(PROBE),
                           f"127.0.0.1:{settings.kafka_controller_port}", topic],
                          capture_output=True, text=True, timeout=120)


def test_the_controller_listener_authenticates_when_clients_must(
        secured: Secured, settings: Settings) -> None:
    """KRaft controllers answer admin requests too: on a plaintext controller listener any
    local program could, e.g., set ``interactions`` to keep records for one second, past
    the SASL the clients' listener asks for. The same probe on the plaintext stack shows
    what it would do."""
    from infra.topics import TopicSpec, ensure_topics

    topic = f"test.probe.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [TopicSpec(topic, 1)])
    open_stack = _probe(settings, topic)
    assert open_stack.returncode == 0 and f"altered {topic}" in open_stack.stdout
    refused = _probe(secured.settings, secured.settings.topic_interactions)
    assert refused.returncode == 1 and "refused" in refused.stdout, refused.stdout
