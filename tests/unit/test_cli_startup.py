"""The CLI starts without TensorFlow: every command would otherwise pay seconds of import
and print TensorFlow's start-up lines on stderr, which breaks one-line errors
(``streamrec stack up`` with a wrong password, ``tests/integration/test_secured.py``).
And options checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.events import Event


def test_the_cli_imports_no_keras_or_tensorflow_at_start() -> None:
    probe = ("import sys, services.cli; "
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("worker_id", ["../x", "/tmp/w", ".hidden", "", "a b", "w" * 65])
def test_a_worker_id_that_is_not_a_plain_name_is_refused(worker_id: str) -> None:
    """It names the worker's state folder under the data dir: ``../x`` or an absolute
    path put its state and its lock outside it."""
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["worker", "--worker-id", worker_id])
    assert result.exit_code == 2 and "--worker-id" in result.output


def test_a_plain_worker_id_is_taken() -> None:
    from services.cli_worker import _plain_name

    assert [_plain_name(w) for w in ("0", "eu-1.b_2")] == ["0", "eu-1.b_2"]


@pytest.mark.parametrize("args", [
    ["tail", "interactions", "--limit", "0"], ["tail", "interactions", "--limit", "-5"],
    ["tail", "interactions", "--idle-timeout", "-1"],
    ["catalog", "load", "items.jsonl", "-f", "jsonl", "--id-map", "x.item2index"],
])
def test_options_that_did_nothing_are_refused(
        streamrec: Callable[..., tuple[int, str]], args: list[str]) -> None:
    """``tail --limit 0`` exited 0 having read nothing, ``--idle-timeout -1`` after one
    poll, and ``--id-map`` was dropped unless the format was amazon."""
    code, said = streamrec(*args)
    assert code == 2 and args[-2] in said, said


def test_sending_into_a_stack_that_is_down_is_one_line_within_seconds(
        streamrec: Callable[..., tuple[int, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records waited out librdkafka's 5-minute delivery timeout, for each full local
    queue, before ``replay``, ``produce`` or ``catalog load`` said anything."""
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nobody listens
    log = tmp_path / "events.jsonl"
    log.write_bytes(Event("e1", "u1", "i1", "view", 1_700_000_000_000).to_json() + b"\n")
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "i1", "title": "Heat"}\n')
    for args in (["replay", str(log), "-f", "jsonl"], ["produce", str(log)],
                 ["catalog", "load", str(items), "-f", "jsonl"]):
        began = time.monotonic()
        code, said = streamrec(*args)
        assert code == 1 and "Kafka did not answer for topic" in said, (args, said)
        assert "is the stack up?" in said and time.monotonic() - began < 60, args


def test_stack_check_says_a_registry_that_is_down_within_seconds(
        streamrec: Callable[..., tuple[int, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked last, with MLflow's retries and 120 s request timeouts, a server that was down
    kept ``stack check`` silent for minutes."""
    monkeypatch.setenv("STREAMREC_MLFLOW_TRACKING_URI", "http://user:pw@127.0.0.1:9")
    began = time.monotonic()
    code, said = streamrec("stack", "check")
    assert (code, said) == (1, "error: MLflow at http://user:***@127.0.0.1:9 did not answer within "
                               "10 s"), said
    assert time.monotonic() - began < 60


def test_the_trainer_stops_after_its_round_on_ctrl_c_and_quits_on_the_second() -> None:
    """Ctrl-C only set a flag read between rounds: nothing was said, and every later press
    was swallowed the same way until a SIGKILL."""
    import signal
    import threading

    from services.cli_trainer import stop_after_the_round

    stop, said = threading.Event(), []
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    handler = stop_after_the_round(stop, said.append)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        handler(signal.SIGINT, None)
        assert stop.is_set() and said == [
            "trainer: stopping after the round in progress (Ctrl-C again to quit now)"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the 2nd quits
        assert signal.getsignal(signal.SIGTERM) is handler
        handler(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
