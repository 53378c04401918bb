"""Dead letters without a broker: summaries, header handling, the redrive decision."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
from confluent_kafka import KafkaException
from typer.testing import CliRunner

from services.cli import app
from streams.catalog import ItemRecord
from streams.consumer import Record
from streams.dead_letters import (
    EVENT_KIND,
    FIRST_WRITTEN_HEADER,
    MISSING,
    REDRIVEN_FROM_HEADER,
    REDRIVES_HEADER,
    ItemTimes,
    Reappend,
    Redrive,
    RedriveReport,
    Span,
    Superseded,
    _outdated,
    _send,
    _settle,
    decide,
    letters,
    put_back_headers,
    redrive,
    refailed_headers,
    summarize,
)
from streams.events import Event
from streams.producer import ITEM_KIND, KIND_HEADER, DeliveryStats, dead_letter_headers

VALID = Event("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u7", "i1", "view",
              1_700_000_000_000).to_json()
LIKE = orjson.dumps({**orjson.loads(VALID), "event_type": "like"})
ITEM = ItemRecord("i1", "A title", price=3.0).to_json()


def letter(value: bytes | None = b"{oops", offset: int = 0, timestamp_ms: int = 5,
           **headers: str) -> Record:
    return Record("interactions.dlq", 0, offset, timestamp_ms, b"k", value,
                  {k: v.encode() for k, v in headers.items()})


def test_summary_groups_by_reason_most_frequent_first() -> None:
    records = [
        letter(reason="bad_json", detail="unexpected end", source="producer", rejected_ms="300"),
        letter(reason="bad_json", detail="unexpected end", source="worker", rejected_ms="100",
               offset=1),
        letter(reason="bad_json", detail="trailing comma", source="worker", rejected_ms="200",
               offset=2, redrives="3"),
        letter(reason="wrong_type", detail="ts must be an integer", source="producer",
               rejected_ms="50", offset=3),
    ]
    bad_json, wrong_type = summarize(records, examples=5)
    assert (bad_json.reason, bad_json.count, bad_json.first_ms, bad_json.last_ms) == (
        "bad_json", 3, 100, 300)
    assert bad_json.sources == {"producer", "worker"}
    assert bad_json.examples == ["unexpected end", "trailing comma"]  # distinct, in order
    assert bad_json.redrives == 3 and wrong_type.redrives == 0  # the most any letter failed
    assert (wrong_type.reason, wrong_type.count) == ("wrong_type", 1)
    assert summarize(records)[0].examples == ["unexpected end"]  # one example by default


def test_summary_copes_with_missing_or_garbled_headers() -> None:
    (only,) = summarize([letter(timestamp_ms=42),
                         letter(timestamp_ms=7, rejected_ms="soon", offset=1),
                         letter(timestamp_ms=9, rejected_ms="²", offset=2)])  # int() refuses ²
    assert (only.reason, only.count, only.first_ms, only.last_ms) == (MISSING, 3, 7, 42)
    assert only.sources == {MISSING} and only.examples == []
    assert summarize([]) == []


def test_put_back_headers_keep_everything_name_the_first_copy_and_count_redrives() -> None:
    first = put_back_headers(letter(reason="bad_json", detail="d", source="worker", offset=4),
                             failed=True)
    assert first == [("reason", b"bad_json"), ("detail", b"d"), ("source", b"worker"),
                     (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@4"), (REDRIVES_HEADER, b"1")]
    copy = letter(reason="bad_json", redrives="1", offset=9,
                  first_written="interactions.dlq[0]@4")
    assert put_back_headers(copy, failed=True) == [
        ("reason", b"bad_json"), (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@4"),
        (REDRIVES_HEADER, b"2")]
    assert put_back_headers(letter(reason="x", redrives="³"), failed=True)[-1] == \
        (REDRIVES_HEADER, b"1")  # garbled: counted afresh, not a crash mid-redrive
    assert put_back_headers(letter(reason="x"), failed=False) == [
        ("reason", b"x"), (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@0")]


def test_a_read_counts_each_letter_once_however_often_it_went_back() -> None:
    """A whole topic's read, and a pending one after a failed run (its copies pending
    beside their letters, which the redrive skips): counted twice, the prompt's count and
    the redrive's line did not add up (a review)."""
    original = letter(reason="bad_json", offset=4)
    copies = [letter(reason="bad_json", offset=o, first_written="interactions.dlq[0]@4")
              for o in (9, 15)]
    other = letter(reason="bad_json", offset=5)
    assert summarize([original, other, *copies])[0].count == 2


def test_a_letter_that_now_validates_is_redriven_keyed_by_user() -> None:
    outcome = decide(letter(VALID, offset=12, reason="unknown_event_type"))
    assert outcome == Redrive(b"u7", VALID, [(REDRIVEN_FROM_HEADER, b"interactions.dlq[0]@12"),
                                             (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@12")])
    copy = letter(VALID, offset=20, reason="processing_error", redrives="2",
                  first_written="interactions.dlq[0]@3")
    assert decide(copy, only="processing_error") == Redrive(b"u7", VALID, [
        (REDRIVEN_FROM_HEADER, b"interactions.dlq[0]@20"),
        (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@3"), (REDRIVES_HEADER, b"2")])


def test_a_redriven_record_rejected_again_names_its_letter_and_counts_one_more_failure() -> None:
    """A worker that fails on a redriven event again (``processing_error``) writes the same
    letter back with its count up, not a fresh letter at 0 that loops unseen."""
    (redriven,) = [decide(letter(VALID, offset=20, redrives="2",
                                 first_written="interactions.dlq[0]@3"))]
    assert isinstance(redriven, Redrive)
    assert refailed_headers(dict(redriven.headers)) == [
        (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@3"), (REDRIVES_HEADER, b"3")]
    once = decide(letter(VALID, offset=4))
    assert isinstance(once, Redrive) and refailed_headers(dict(once.headers)) == [
        (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@4"), (REDRIVES_HEADER, b"1")]
    assert refailed_headers({}) == []  # an event that was never a letter
    assert refailed_headers({FIRST_WRITTEN_HEADER: b"d[0]@1", REDRIVES_HEADER: b"x"})[-1] == \
        (REDRIVES_HEADER, b"1")  # garbled: counted afresh
    for huge in (b"1" * 4301, b"9" * 19):  # past int()'s digit limit; past 64 bits
        assert refailed_headers({FIRST_WRITTEN_HEADER: b"d[0]@1", REDRIVES_HEADER: huge}
                                )[-1] == (REDRIVES_HEADER, b"1")


class _Pending:
    """A dead-letter queue's read side, for a dry run without a broker."""

    def __init__(self, records: list[Record]) -> None:
        self.records, self.topic, self.kafka = records, "interactions.dlq", None

    def read(self, spans: list[Span]) -> list[Record]:
        return self.records


def test_a_copy_a_failed_run_put_back_is_not_redriven_a_second_time() -> None:
    """A failed run put back a copy of a still-invalid letter and committed nothing: the
    next run reads the letter and its copy, and sends the event once."""
    original = letter(VALID, offset=4, reason="unknown_event_type")
    copy = letter(VALID, offset=9, reason="unknown_event_type", redrives="1",
                  first_written="interactions.dlq[0]@4")
    other = letter(VALID, offset=5, reason="unknown_event_type")
    report = redrive(_Pending([original, other, copy]), [], "interactions",  # type: ignore[arg-type]
                     dry_run=True)
    assert (report.read, report.redriven, report.copies) == (3, 2, 1)


def test_letters_past_max_redrives_are_retired_not_put_back() -> None:
    """A letter that can never pass (a type no release will know) came back at every
    redrive, for good, with nothing to retire it."""
    from services.cli_dlq import _line

    tired = letter(LIKE, offset=4, reason="unknown_event_type", redrives="3")
    fresh = letter(LIKE, offset=5, reason="unknown_event_type", redrives="2")
    report = redrive(_Pending([tired, fresh]), [], "interactions", dry_run=True,  # type: ignore[arg-type]
                     max_redrives=3)
    assert (report.read, report.retired, report.still_invalid.total()) == (2, 1, 1)
    assert "retired 1 (failed --max-redrives" in _line(report, dry_run=True)
    everyone = redrive(_Pending([tired, fresh]), [], "interactions", dry_run=True)  # type: ignore[arg-type]
    assert (everyone.retired, everyone.still_invalid.total()) == (0, 2)


def test_a_letter_still_invalid_goes_back_unchanged_but_counted() -> None:
    outcome = decide(letter(LIKE, reason="unknown_event_type", detail="like"))
    assert outcome == Reappend("unknown_event_type", b"k", LIKE, [
        ("reason", b"unknown_event_type"), ("detail", b"like"),
        (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@0"), (REDRIVES_HEADER, b"1")], True, 5)
    empty = decide(letter(None, reason="bad_json"))
    assert isinstance(empty, Reappend) and empty.attempted and empty.value == b""


def test_a_letter_failing_for_another_reason_now_is_filed_under_it() -> None:
    """Put back under its old reason and detail, `inspect` said the fix for that reason
    had not worked, and `redrive --reason` for the new one never picked it up (a review)."""
    outcome = decide(letter(b'{"oops": 1}', reason="unknown_event_type", detail="like",
                            source="api", rejected_ms="100"))
    assert isinstance(outcome, Reappend) and outcome.attempted
    headers = dict(outcome.headers)
    assert outcome.reason == headers["reason"].decode() != "unknown_event_type"
    assert headers["first_reason"] == b"unknown_event_type" and headers["source"] == b"api"
    assert headers["detail"] != b"like" and int(headers["rejected_ms"]) > 100
    again = decide(letter(b'{"oops": 1}', offset=7, **{k: v.decode() for k, v in headers.items()}))
    assert dict(again.headers)["first_reason"] == b"unknown_event_type"  # the first kept


def test_a_letter_put_back_keeps_its_record_time() -> None:
    """Stamped anew at each redrive, a letter that can never pass (a tombstone, a cut
    record) outlived the topic's retention for good (a review)."""
    sent: list[tuple] = []
    producer = SimpleNamespace(produce=lambda topic, key, value, headers, timestamp_ms=None:
                               sent.append((topic, timestamp_ms)))
    _send(producer, decide(letter(None, reason="empty_record", timestamp_ms=1234)),  # type: ignore[arg-type]
          {"event": "interactions"}, "interactions.dlq")
    assert sent == [("interactions.dlq", 1234)]


def test_the_redrive_line_counts_the_copies_it_skipped() -> None:
    from services.cli_dlq import _line

    report = RedriveReport(read=3, redriven=1, copies=1)
    report.still_invalid["unknown_event_type"] += 1
    assert _line(report, dry_run=False) == (
        "read 3 (1 copies a failed run put back, skipped): redriven 1, still invalid 1 "
        "(unknown_event_type 1)")


def test_letters_of_other_reasons_go_back_untouched_when_filtered() -> None:
    outcome = decide(letter(VALID, reason="bad_json", redrives="3"), only="wrong_type")
    assert outcome == Reappend("bad_json", b"k", VALID, [
        ("reason", b"bad_json"), (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@0"),
        (REDRIVES_HEADER, b"3")], False, 5)


def test_report_tallies_outcomes_by_kind_and_reason() -> None:
    report = RedriveReport()
    for record, only in [(letter(VALID, reason="bad_json"), None),
                         (letter(reason="bad_json"), None), (letter(reason="bad_json"), None),
                         (letter(reason="wrong_type"), "bad_json")]:
        report.add(decide(record, only))
    assert (report.read, report.redriven) == (4, 1)
    assert report.still_invalid == {"bad_json": 2} and report.left_out == {"wrong_type": 1}
    assert not report.committed


def test_spans_count_letters() -> None:
    assert letters([Span(0, 3, 10), Span(1, 5, 5), Span(2, 9, 4)]) == 7


def test_a_partition_whose_letters_all_expired_is_moved_past_them() -> None:
    """Its group stayed where retention had deleted past, and every later inspect and
    redrive warned of the same expired letters again."""
    from types import SimpleNamespace

    from streams.dead_letters import DeadLetterQueue

    commits: list[list[tuple[int, int]]] = []
    queue = DeadLetterQueue.__new__(DeadLetterQueue)
    queue.topic = "dlq"
    queue._consumer = SimpleNamespace(  # type: ignore[assignment]
        commit=lambda offsets, asynchronous: commits.append(
            [(o.partition, o.offset) for o in offsets]))
    queue.commit([Span(0, 10, 12), Span(1, 7, 7, expired=3), Span(2, 5, 5)])
    assert commits == [[(0, 12), (1, 7)]]  # partition 2: nothing there, nothing expired


def test_redrive_without_a_terminal_or_yes_refuses_before_touching_kafka() -> None:
    result = CliRunner().invoke(app, ["dlq", "redrive"], input="y\n")
    assert result.exit_code == 1
    assert result.output.strip() == ("refusing to redrive without confirmation: stdin is not "
                                     "a terminal; pass --yes")


def test_a_catalogue_letter_is_revalidated_as_a_record_and_redriven_keyed_by_item() -> None:
    outcome = decide(letter(ITEM, offset=3, reason="bad_value", kind="item"))
    assert outcome == Redrive(b"i1", ITEM, [(REDRIVEN_FROM_HEADER, b"interactions.dlq[0]@3"),
                                            (FIRST_WRITTEN_HEADER, b"interactions.dlq[0]@3")],
                              ITEM_KIND)
    # Valid as a record, not as an event: judged by its kind, never as an event.
    assert isinstance(decide(letter(ITEM, reason="bad_value")), Reappend)
    assert decide(letter(VALID, reason="x")).kind == EVENT_KIND  # no kind header: an event
    still_bad = decide(letter(b'{"item_id": "i1", "price": -1}', reason="bad_value",
                              kind="item"))
    assert isinstance(still_bad, Reappend) and still_bad.attempted
    assert (KIND_HEADER, b"item") in still_bad.headers  # still a catalogue letter when put back


def test_without_an_items_topic_catalogue_letters_go_back_untouched() -> None:
    outcome = decide(letter(ITEM, reason="bad_value", kind="item"), kinds=frozenset({"event"}))
    assert isinstance(outcome, Reappend) and not outcome.attempted
    unknown = decide(letter(ITEM, reason="bad_value", kind="thing"))  # a kind of the future
    assert isinstance(unknown, Reappend) and not unknown.attempted


def test_summaries_count_catalogue_letters_by_reason_and_source() -> None:
    (summary,) = summarize([letter(ITEM, reason="bad_value", source="streamrec-catalog",
                                   kind="item"),
                            letter(reason="bad_value", source="worker", offset=1)])
    assert summary.count == 2 and summary.sources == {"streamrec-catalog", "worker"}


def test_a_long_detail_is_cut_on_a_character_boundary() -> None:
    """Cut at 1 KiB inside a two-byte character, the header was not valid UTF-8."""
    detail = dict(dead_letter_headers("bad_value", "x" + "é" * 600, "api"))["detail"]
    assert len(detail) == 1023 and detail.decode() == "x" + "é" * 511


def test_inspect_shows_a_time_past_any_date_as_its_number() -> None:
    """A hand-made letter's ``rejected_ms`` past year 9999 crashed the whole listing."""
    from services.cli_dlq import _time

    assert _time(0) == "1970-01-01 00:00:00"
    assert _time(10**20) == f"{10**20} ms"


class _SlowBroker:
    """A producer whose records a 30 s flush leaves waiting and whose full close reports
    them, delivered or ``failing`` of them not: a broker back after a minute's leader
    election. Its close alone reports, so a settle that does not wait for it sees none."""

    def __init__(self, failing: int = 0) -> None:
        self.stats, self.waiting, self.failing = DeliveryStats(), 3, failing

    def flush(self, timeout_s: float = 30.0) -> int:
        return self.waiting

    def close(self) -> None:
        self.waiting, self.stats.failed = 0, self.failing


def test_a_redrive_waits_for_every_report_before_it_calls_the_run_failed() -> None:
    """Called failed after a short flush, a run left its letters pending although
    librdkafka delivered them as it closed: the next run sent them all again. And a
    failure the close reports fails the run."""
    _settle(_SlowBroker())  # type: ignore[arg-type]
    with pytest.raises(KafkaException, match="2 records not delivered"):
        _settle(_SlowBroker(failing=2))  # type: ignore[arg-type]


def test_a_catalogue_letter_refiled_under_a_new_reason_is_still_older_than_a_later_record(
) -> None:
    """A copy re-filed under a new reason carries that refusal's time: an item record
    written between the first refusal and the re-filing read as older than the letter,
    and the redrive replaced it with the letter's old content (a review)."""
    kind = {KIND_HEADER: ITEM_KIND}
    refiled = letter(ITEM, offset=9, timestamp_ms=1_000, reason="unknown_field",
                     rejected_ms="3000", first_reason="bad_value", **kind)
    times = ItemTimes(None, "items")  # type: ignore[arg-type]
    times._written = {b"i1": 2_000}  # the item's good record, between the two refusals
    assert isinstance(_outdated(decide(refiled), refiled, times), Superseded)
    times._written = {b"i1": 500}  # the item's record is older than the first refusal
    assert isinstance(_outdated(decide(refiled), refiled, times), Redrive)


def test_a_tombstone_letter_stays_an_empty_record_through_its_redrives() -> None:
    """Put back with an empty value, it was re-validated as empty JSON: ``bad_json``, which
    ``--reason empty_record`` never picked again (a review)."""
    outcome = decide(letter(None, reason="empty_record"))
    assert isinstance(outcome, Reappend) and outcome.reason == "empty_record"
    again = decide(letter(outcome.value, offset=3, **{k: v.decode() for k, v in
                                                      outcome.headers}), only="empty_record")
    assert isinstance(again, Reappend) and again.attempted and again.reason == "empty_record"


def test_a_whole_topic_summary_files_each_letter_under_its_newest_copy() -> None:
    """The whole topic's first copy of a letter is the letter itself: ``inspect --all``
    showed its first reason and no redrive (a review)."""
    original = letter(reason="unknown_event_type", offset=4)
    copies = [letter(reason="missing_field", offset=o, first_written="interactions.dlq[0]@4",
                     first_reason="unknown_event_type", redrives=str(n), rejected_ms=str(o))
              for n, o in ((1, 9), (3, 15))]
    (only,) = summarize([original, *copies], newest=True)
    assert (only.reason, only.count, only.redrives) == ("missing_field", 1, 3)
    # pending letters: filed as the redrive decides on them, under the first copy's reason
    (pending,) = summarize([original, *copies])
    assert (pending.reason, pending.count) == ("unknown_event_type", 1)
