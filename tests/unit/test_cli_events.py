"""``streamrec tail`` over records any producer can write (a header without a value, a
value nested deeper than orjson writes), and ``produce`` of a gzip file cut short."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from typer.testing import CliRunner

from services.cli import app
from streams.consumer import Record
from streams.readers import LogFileError

DEEP = b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}"


@pytest.mark.parametrize("raw", [True, False])
def test_tail_shows_records_with_a_null_header_or_a_deep_value(
        monkeypatch: pytest.MonkeyPatch, raw: bool) -> None:
    """A header with no value (Kafka allows one) raised ``AttributeError``; a dead letter
    nested 300 levels (orjson reads 1,024, writes 254) stopped every ``tail --raw`` at it."""
    records = [Record("t", 0, 0, 1, b"u1", b'{"ok": 1}', {"trace": None}),  # type: ignore[dict-item]
               Record("t", 0, 1, 1, b"u2", DEEP, {"reason": b"bad_value"})]
    monkeypatch.setattr("services.cli_events.read_topic", lambda *a, **k: iter(records))
    out = CliRunner().invoke(app, ["tail", "t", *(["--raw"] if raw else [])])
    assert out.exit_code == 0, out.output
    if raw:
        first, second = (orjson.loads(line) for line in out.output.splitlines())
        assert first["headers"] == {"trace": None} and first["value"] == {"ok": 1}
        assert second["value"] == DEEP.decode() and second["headers"] == {"reason": "bad_value"}
    else:
        assert "trace" in out.output and "[[[" in out.output


def _fake_producer(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """``produce``'s producer replaced by one that keeps what it is sent (returned)."""
    sent: list[bytes] = []

    class Producer:
        stats = SimpleNamespace(delivered=0, failed=0)

        def __init__(self, *args: object, **kwargs: object) -> None: ...
        def check_topics(self) -> Producer:
            return self

        def __enter__(self) -> Producer:
            return self

        def __exit__(self, *exc: object) -> None: ...
        def send_checked(self, raw: bytes) -> bool:
            sent.append(raw)
            return True

    monkeypatch.setattr("services.cli_events.EventProducer", Producer)
    return sent


def test_produce_refuses_a_gzip_cut_short_before_sending_any_of_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sent as read, a file cut at two thirds sent two thirds, then said only that it was
    cut: sent again once whole, those events were on the topic twice."""
    from streams.events import new_event

    whole = gzip.compress(b"".join(new_event(f"u{i}", "i1", "click").to_json() + b"\n"
                                   for i in range(3000)))
    cut = tmp_path / "events.jsonl.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    sent = _fake_producer(monkeypatch)
    out = CliRunner().invoke(app, ["produce", str(cut)])  # the CLI's main says it in a line
    assert isinstance(out.exception, LogFileError) and sent == []
    assert "not a whole gzip file" in str(out.exception) and "nothing sent" in str(out.exception)


@pytest.mark.parametrize("piped", [True, False])
def test_produce_reads_gzip_by_its_bytes_from_a_pipe_or_a_file_named_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, piped: bool) -> None:
    """Known by the ``.gz`` suffix alone, ``cat events.jsonl.gz | streamrec produce`` (or a
    gzip file named ``events.jsonl``) sent every line to the dead letters, and exited 0."""
    from streams.events import new_event

    lines = [new_event(f"u{i}", "i1", "click").to_json() for i in range(50)]
    packed = gzip.compress(b"".join(line + b"\n" for line in lines))
    sent = _fake_producer(monkeypatch)
    named = tmp_path / "events.jsonl"
    named.write_bytes(packed)
    out = (CliRunner().invoke(app, ["produce"], input=packed) if piped
           else CliRunner().invoke(app, ["produce", str(named)]))
    assert out.exit_code == 0, out.output
    assert [orjson.loads(raw) for raw in sent] == [orjson.loads(line) for line in lines]
    if piped:  # a stream cut short: one line (the CLI's main prints it), not a traceback
        out = CliRunner().invoke(app, ["produce"], input=packed[:len(packed) // 2])
        assert isinstance(out.exception, LogFileError), out.exception
        assert "stdin: not a whole gzip stream" in str(out.exception)
