"""Logging (``services.logs``): in JSON mode one valid JSON object per line, with the stream's
context and no secret; in text mode each process keeps its own lines.

``configure`` in JSON mode runs in a child process: ``dictConfig`` closes every handler
the process has, and TensorFlow's (imported by other tests) would close pytest's capture.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from rich.console import Console

from services.logs import JsonLines, Throttle, configure, masked_records
from services.settings import REPO_ROOT
from streams import log_context
from streams.log_context import LogContext

SECRET_URL = "redis://streamrec:s3cret-pass@redis:6379/0?password=qs-secret"


def json_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    assert all(line.startswith("{") for line in lines), text
    return [json.loads(line) for line in lines]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines into a string, as ``configure`` sets up."""
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(masked_records(factory))
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines({"process": "worker", "worker_id": "w7"}))
    handler.addFilter(LogContext())
    log = logging.getLogger("test.logs")
    log.addHandler(handler)
    log.propagate = False
    yield log, out
    log.removeHandler(handler)
    logging.setLogRecordFactory(factory)
    log_context._served.clear()  # process-wide: later tests must not see this version


def test_json_lines_carry_the_worker_partition_and_model_and_no_secret(
        logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    log_context.serving("retriever:v3+ranker:v2")

    def one_event() -> None:
        log_context.in_partition(2)
        log.warning("writing to %s failed", SECRET_URL)
        try:
            raise ConnectionError(f"refused by {SECRET_URL}")
        except ConnectionError:
            log.exception("two\nlines")

    contextvars.copy_context().run(one_event)  # the partition stays in the event's context
    log.warning("between events")
    text = out.getvalue()
    warning, error, between = json_lines(text)
    assert "s3cret-pass" not in text and "qs-secret" not in text
    assert warning["message"] == ("writing to redis://streamrec:***@redis:6379/0?password=***"
                                  " failed")
    assert list(warning)[0] == "ts" and warning["ts"].endswith("+00:00")
    assert {k: v for k, v in warning.items() if k not in ("ts", "message")} == {
        "level": "WARNING", "logger": "test.logs", "process": "worker", "worker_id": "w7",
        "partition": 2, "model_version": "retriever:v3+ranker:v2"}
    assert error["message"] == "two\nlines" and "ConnectionError: refused" in error["exc_info"]
    assert "partition" not in between and between["model_version"] == "retriever:v3+ranker:v2"


def test_configure_json_sets_up_every_logger_and_what_uvicorn_is_handed() -> None:
    script = textwrap.dedent("""
        import logging, logging.config
        from rich.console import Console
        from services.logs import configure
        logs = configure("json", "warn", "worker", worker_id="w7")
        logging.getLogger("faust").info("below the level: not written")
        logging.getLogger("streams.steps").warning("redis down")
        logs.say(Console(stderr=True), "worker w7: model v3")  # shown at any level
        logging.config.dictConfig(logs.config)  # as Faust's worker and uvicorn do again
        logging.getLogger("uvicorn.error").warning("bye", extra={"color_message": "\\x1b[1m"})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    lines = json_lines(done.stderr)
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("streams.steps", "WARNING", "redis down"),
        ("streamrec.worker", "INFO", "worker w7: model v3"),
        ("uvicorn.error", "WARNING", "bye")]
    assert all(line["process"] == "worker" and line["worker_id"] == "w7" for line in lines)
    assert "color_message" not in lines[2]



def test_a_producers_librdkafka_lines_come_out_as_json() -> None:
    """librdkafka's own lines (a refused connection here) go through the ``librdkafka``
    logger, so in JSON mode they are JSON lines too: they were raw ``%3|...`` lines on
    stderr among the JSON ones."""
    script = textwrap.dedent("""
        import time
        from infra.kafka_client import KafkaConnection
        from services.logs import configure
        from streams.producer import RecordProducer
        configure("json", "warn", "api")
        producer = RecordProducer(KafkaConnection("127.0.0.1:1"), {"message.timeout.ms": 1000})
        producer.produce("t", b"k", b"v")
        producer.flush(5)  # serves the lines; the record fails after a second
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    refused = [line for line in json_lines(done.stderr) if line["logger"] == "librdkafka"]
    assert refused and refused[0]["level"] == "ERROR", done.stderr
    assert "Connection refused" in refused[0]["message"]
    assert all(line["process"] == "api" for line in refused)

def test_text_mode_leaves_each_process_its_own_lines(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    logs = configure("text", "info", "trainer")
    assert logs.config is None  # Faust and uvicorn keep their formats
    logs.say(Console(stderr=True), "trainer: a round every 60 min")
    assert capsys.readouterr().err == "trainer: a round every 60 min\n"
    assert logging.getLogger("mlflow").level == logging.WARNING


def test_text_lines_are_masked_too(capsys: pytest.CaptureFixture[str]) -> None:
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(masked_records(factory))
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test.logs.text")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("lists from %s", SECRET_URL)
        try:
            raise ConnectionError(f"refused by {SECRET_URL}")
        except ConnectionError:
            log.exception("redis down")
    finally:
        log.removeHandler(handler)
        logging.setLogRecordFactory(factory)
    text = out.getvalue()
    assert "redis://streamrec:***@redis:6379/0?password=***" in text
    assert "ConnectionError: refused by redis://streamrec:***@" in text
    assert "s3cret-pass" not in text and "qs-secret" not in text


def test_a_log_call_with_mismatched_arguments_does_not_raise_into_its_caller() -> None:
    """Third-party code logs ``log.warning("failed", exc)`` now and then: logging reports
    the bad format when it emits and carries on; the masking factory raised it at the
    call instead, inside Faust or uvicorn."""
    make = masked_records(logging.LogRecord)
    record = make("lib", logging.WARNING, __file__, 1, "value %d", ("not a number",), None)
    assert (record.msg, record.args) == ("value %d", ("not a number",))  # left for logging
    masked = make("lib", logging.WARNING, __file__, 1, "from %s", (SECRET_URL,), None)
    assert "s3cret-pass" not in masked.getMessage()


def test_a_retry_storm_logs_once_per_interval_and_says_how_many_it_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka logs each 0.1 s retry while a broker is away (~280 lines a second per
    worker in a broker outage): one line per message per interval gets through."""
    now = [0.0]
    logger = logging.getLogger("streamrec-test-throttle")
    logger.addFilter(Throttle(every_s=10, clock=lambda: now[0]))
    with caplog.at_level(logging.ERROR, logger=logger.name):
        for node in range(50):
            logger.error("Unable connect to node with id %s", node)
            logger.error("Failed fetch messages from %s", node)
            now[0] += 0.1
        now[0] += 10
        logger.error("Unable connect to node with id %s", 7)
    assert [r.getMessage() for r in caplog.records] == [
        "Unable connect to node with id 0", "Failed fetch messages from 0",
        "Unable connect to node with id 7 (49 more like it held back)"]


def test_debug_never_logs_aiokafkas_requests_a_sasl_login_among_them() -> None:
    """At DEBUG aiokafka logs each request it sends, and a SASL PLAIN login's request
    holds the password in its bytes: ``--log-level debug`` wrote it to the log."""
    script = textwrap.dedent("""
        import logging
        from services.logs import configure
        configure("json", "debug", "worker")
        logging.getLogger("aiokafka.conn").debug(
            "Request to %s:%d %d: %s", "kafka", 9092, 7,
            "SaslAuthenticateRequest_v1(sasl_auth_bytes=b'\\\\x00alice\\\\x00s3cret')")
        logging.getLogger("aiokafka.cluster").debug("metadata updated")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert "s3cret" not in done.stderr
    assert [line["message"] for line in json_lines(done.stderr)] == ["metadata updated"]
