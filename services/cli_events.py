"""``streamrec produce | replay | tail | generate``: events into and out of Kafka."""

from __future__ import annotations

import itertools
import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from services.progress import progress_bar
from services.settings import Settings, load_settings
from streams.consumer import read_topic
from streams.events import json_lines
from streams.files import GZIP_ERRORS, gunzipped, is_gzip, open_binary
from streams.producer import EventProducer
from streams.readers import READERS, LogFileError, log_columns, read_events
from streams.replay import ReplaySummary
from streams.replay import replay as replay_log
from streams.synthetic import SyntheticConfig
from streams.synthetic import catalogue as synthetic_catalogue
from streams.synthetic import generate as generate_events

app = typer.Typer()
console = Console()

Format = StrEnum("Format", {name: name for name in READERS})  # type: ignore[misc]
Columns = Annotated[str | None, typer.Option(
    help="a headerless csv log's columns in order, e.g. user,item,,type,time (empty: skip)")]
# What NumPy's and Keras' seeding take: a seed outside it was a traceback after the log
# had been read (or, for ``generate``, after the output file had been emptied).
Seed = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="random seed")]


def columns_of(text: str | None) -> tuple[str, ...]:
    """``--columns``' names (:func:`streams.readers.log_columns`); too few is a bad
    parameter, before anything is read."""
    try:
        return () if text is None else log_columns(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--columns") from None


def _producer(settings: Settings, source: str) -> EventProducer:
    return EventProducer(settings.kafka, settings.topic_interactions, settings.topic_dlq,
                         source=source).check_topics()


def _produce_lines(lines: BinaryIO, producer: EventProducer) -> tuple[int, int]:
    """Send each non-blank JSON line; returns (sent, dead-lettered)."""
    sent = rejected = 0
    for _, raw in json_lines(lines):
        if producer.send_checked(raw):
            sent += 1
        else:
            rejected += 1
    return sent, rejected


def _check_whole(path: Path) -> None:
    """Refuse a gzip file cut short before sending any of it: the lines are sent as they
    are read, and a file cut at two thirds sent two thirds, then said only that it was
    cut (sent again once whole, those events were sent twice). One pass of
    decompression first; a plain file needs none."""
    if not is_gzip(path):
        return
    try:
        with open_binary(path) as handle:
            while handle.read(1 << 20):
                pass
    except GZIP_ERRORS as exc:
        raise LogFileError(f"{path}: not a whole gzip file ({exc}); nothing sent") from exc


@app.command()
def produce(
    path: Annotated[Path | None, typer.Argument(help="JSON lines file; stdin when omitted or '-'")]
    = None,
) -> None:
    """Send JSON-lines events to the interactions topic; invalid lines go to the DLQ."""
    settings = load_settings()
    with _producer(settings, "streamrec-produce") as producer:  # Ctrl-C still delivers
        if path is None or str(path) == "-":
            try:  # a stream cannot be checked whole first, as a file is
                sent, rejected = _produce_lines(gunzipped(sys.stdin.buffer), producer)
            except GZIP_ERRORS as exc:
                raise LogFileError(f"stdin: not a whole gzip stream ({exc}); the lines "
                                   "before the cut were sent") from exc
        else:
            _check_whole(path)
            with open_binary(path) as handle:  # events.jsonl.gz read as its lines
                sent, rejected = _produce_lines(handle, producer)
    stats = producer.stats
    console.print(f"sent {sent}, dead-lettered {rejected}; records acknowledged (events and "
                  f"letters) {stats.delivered}, failed {stats.failed}"
                  + (f" ({stats.last_error})" if stats.failed else ""))
    if stats.failed:
        raise typer.Exit(1)


def number_within(value: float | None, low: float, high: float, name: str) -> float | None:
    """A number strictly between ``low`` and ``high``, when given."""
    if value is not None and not low < value < high:
        bounds = f"> {low:g}" + (f" and < {high:g}" if math.isfinite(high) else "")
        raise typer.BadParameter(f"must be {bounds}, got {value}", param_hint=name)
    return value


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="interaction log to replay")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="log format")],
    rate: Annotated[float | None, typer.Option(
        callback=lambda v: number_within(v, 0.0, math.inf, "--rate"),
        help="at most this many events/s")] = None,
    time_scale: Annotated[float | None, typer.Option(
        callback=lambda v: number_within(v, 0.0, math.inf, "--time-scale"),
        help="event time runs this many times faster than wall time")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many records")
                     ] = None,
    columns: Columns = None,
) -> None:
    """Replay a log into the interactions topic in event-time order."""
    names = columns_of(columns)
    settings = load_settings()
    events = iter(read_events(path, fmt.value, names))
    if (first := next(events, None)) is None:  # the file's fault first, Kafka's after
        raise LogFileError(f"{path}: no records in format {fmt.value}; nothing was sent")
    producer = _producer(settings, "streamrec-replay")  # closed by replay_log
    fields = ("{task.fields[rate]:>8,.0f} ev/s  sent {task.fields[sent]:,}  "
              "dead-lettered {task.fields[letters]:,}  failed {task.fields[failed]:,}")
    with progress_bar(f"replay {path.name}", limit, fields) as update:
        update(0, rate=0.0, sent=0, letters=0, failed=0)

        def show(s: ReplaySummary) -> None:
            update(s.read, rate=s.events_per_s, sent=s.sent, letters=s.dead_lettered,
                   failed=s.failed)

        summary = replay_log(itertools.chain([first], events), producer, rate=rate,
                             time_scale=time_scale, limit=limit, on_progress=show)
        show(summary)
    console.print(
        f"replayed {path} into {settings.topic_interactions}: read {summary.read:,}, "
        f"sent {summary.sent:,}, dead-lettered {summary.dead_lettered:,}; records "
        f"acknowledged (events and letters) {summary.delivered:,}, failed {summary.failed:,}; "
        f"in {summary.seconds:.1f} s "
        f"({summary.events_per_s:,.0f} events/s)")
    if summary.failed:
        raise typer.Exit(1)


def _writable(value: object) -> bool:
    """Whether ``value`` (JSON read back) can be written again: orjson reads 1,024 levels
    of nesting but writes 254, so a letter of a deeply nested record stopped every
    ``tail`` that reached it."""
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="topic name, e.g. recommendations or interactions.dlq")],
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many records")
                     ] = None,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest record")] = False,
    idle_timeout: Annotated[float | None, typer.Option(
        callback=lambda v: number_within(v, 0.0, math.inf, "--idle-timeout"),
        help="stop after this many seconds without a record")] = None,
    raw: Annotated[bool, typer.Option(help="one compact JSON object per line")] = False,
) -> None:
    """Pretty-print records from a topic as they arrive."""
    settings = load_settings()
    for rec in read_topic(settings.kafka, topic, from_beginning=from_beginning,
                          limit=limit, idle_timeout_s=idle_timeout):
        try:
            value: object = orjson.loads(rec.value) if rec.value is not None else None
        except orjson.JSONDecodeError:
            value = rec.value.decode(errors="replace") if rec.value else None
        # Kafka allows a header without a value (None here): any producer may write one.
        headers = {k: None if v is None else v.decode(errors="replace")
                   for k, v in rec.headers.items()}
        key = rec.key.decode(errors="replace") if rec.key is not None else None
        if not _writable(value):  # nested past what the writers take: shown as its text
            value = rec.value.decode(errors="replace") if rec.value else None
        if raw:
            sys.stdout.write(orjson.dumps({"partition": rec.partition, "offset": rec.offset,
                                           "key": key, "headers": headers, "value": value})
                             .decode() + "\n")
            continue
        # Keys, headers and values are user data: escaped, or "[/x]" in one ends the tail.
        console.print(f"[dim]{escape(rec.topic)}\\[{rec.partition}]@{rec.offset}[/] "
                      f"key=[bold]{escape(str(key))}[/]"
                      + (f" headers={escape(str(headers))}" if headers else ""), highlight=False)
        if isinstance(value, str):
            console.print(value, markup=False, highlight=False)
        else:
            console.print_json(data=value)


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="JSON lines file to write")],
    events: Annotated[int, typer.Option(min=1)] = 100_000,
    users: Annotated[int, typer.Option(min=1)] = 2_000,
    items: Annotated[int, typer.Option(min=4)] = 1_000, seed: Seed = 7,  # > 3 successors
    drift_at: Annotated[float | None, typer.Option(
        callback=lambda v: number_within(v, 0.0, 1.0, "--drift-at"),
        help="fraction of the timeline after which user tastes shift")] = None,
    catalogue: Annotated[Path | None, typer.Option(
        help="also write the items' catalogue here, each item's hidden topic as its "
             "category (JSON lines: `streamrec catalog load --format jsonl` reads it)")] = None,
) -> None:
    """Write a synthetic interaction log (power-law items, tastes, sequences, sessions)."""
    cfg = SyntheticConfig(users=users, items=items, events=events, seed=seed, drift_at=drift_at)
    with open(out, "wb") as handle, progress_bar("generate", events) as update:
        for n, event in enumerate(generate_events(cfg), 1):
            handle.write(event.to_json() + b"\n")
            if n % 5000 == 0:
                update(n)
    console.print(f"wrote {events:,} events ({users:,} users, {items:,} items) to {out}")
    if catalogue is not None:
        catalogue.write_bytes(b"".join(r.to_json() + b"\n" for r in synthetic_catalogue(cfg)))
        console.print(f"wrote the catalogue of its {items:,} items to {catalogue}")
