"""``streamrec dlq inspect | redrive``: dead letters by reason, and sending fixed ones back in."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from services.progress import Update, progress_bar
from services.settings import load_settings
from streams.consumer import Record
from streams.dead_letters import (
    DLQ_GROUP,
    DeadLetterQueue,
    ReasonSummary,
    RedriveReport,
    Span,
    expired,
    letters,
    redrive,
    summarize,
)
from streams.events import Reason

app = typer.Typer(help="Dead letters: inspect them by reason, redrive the ones since fixed.",
                  no_args_is_help=True)
console = Console()

Group = Annotated[str, typer.Option(help="consumer group whose committed position marks "
                                         "the letters already handled")]


def _time(ms: int) -> str:
    """``ms`` as a UTC time; a header past what a date can hold (a hand-made letter) is
    shown as its number, not a crash of the whole listing."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _table(summaries: list[ReasonSummary]) -> Table:
    """Counts, times and sources per reason; the details, up to 1 KiB each, go below it."""
    table = Table(Column("reason", no_wrap=True), Column("letters", justify="right"),
                  Column("first rejected (UTC)", min_width=10),  # wraps after the date
                  Column("last rejected (UTC)", min_width=10), "sources",
                  Column("most redrives", justify="right"))
    for s in summaries:
        table.add_row(escape(s.reason), f"{s.count:,}", _time(s.first_ms), _time(s.last_ms),
                      escape(", ".join(sorted(s.sources))), f"{s.redrives:,}")
    return table


def _counting(records: Iterator[Record], update: Update) -> Iterator[Record]:
    """Pass records through, moving the progress bar every few hundred."""
    n = 0
    for n, record in enumerate(records, 1):
        if n % 500 == 0:
            update(n)
        yield record
    update(n)


@app.command()
def inspect(
    examples: Annotated[int, typer.Option(min=0, help="distinct details shown per reason")] = 1,
    all_: Annotated[bool, typer.Option("--all", help="every letter kept, handled or not")]
    = False,
    group: Group = DLQ_GROUP,
) -> None:
    """Count the dead letters not yet handled (or all of them) by reason."""
    settings = load_settings()
    with DeadLetterQueue(settings.kafka, settings.topic_dlq, group) as queue:
        spans = queue.pending(from_beginning=all_)
        _warn_expired(spans, settings.topic_dlq, group)
        with progress_bar(f"read {settings.topic_dlq}", letters(spans)) as update:
            summaries = summarize(_counting(queue.read(spans), update), examples, newest=all_)
    which = "kept" if all_ else f"not yet handled by {group}"
    if not summaries:
        console.print(f"no dead letters {which} in {settings.topic_dlq}")
        return
    console.print(_table(summaries))
    for s in summaries:
        for example in s.examples:
            console.print(f"{s.reason}: {example}", markup=False, highlight=False)
    console.print(f"{sum(s.count for s in summaries):,} dead letters {which} in "
                  f"{settings.topic_dlq}")


def _warn_expired(spans: list[Span], topic: str, group: str) -> None:
    """One line when retention deleted letters before ``group`` handled them."""
    if gone := expired(spans):
        console.print(f"warning: {gone:,} dead letters in {topic} expired before {group} "
                      "handled them (the topic's retention.ms); they are gone",
                      markup=False, highlight=False)


def _line(report: RedriveReport, dry_run: bool) -> str:
    """One line: redriven, still invalid and left out, the last two by reason."""
    def by_reason(counts: Counter[str]) -> str:
        return ", ".join(f"{reason} {n:,}" for reason, n in counts.most_common())

    line = f"redriven {report.redriven:,}, still invalid {report.still_invalid.total():,}"
    if report.copies:  # `inspect` and the prompt count each letter once too
        line = (f"read {report.read:,} ({report.copies:,} copies a failed run put back, "
                f"skipped): {line}")
    if report.still_invalid:
        line += f" ({by_reason(report.still_invalid)})"
    if report.left_out:
        line += f", left out {report.left_out.total():,} ({by_reason(report.left_out)})"
    if report.retired:
        line += (f", retired {report.retired:,} (failed --max-redrives redrives: not put back; "
                 "they stay in the topic until its retention)")
    if report.superseded:
        line += (f", superseded {report.superseded:,} (catalogue letters older than their "
                 "item's current record: not sent)")
    return line + ("; dry run: nothing sent or committed" if dry_run else "")


@app.command("redrive")
def redrive_command(
    reason: Annotated[Reason | None, typer.Option(help="redrive only letters of this reason")]
    = None,
    dry_run: Annotated[bool, typer.Option(help="report what would happen; send nothing")]
    = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    group: Group = DLQ_GROUP,
    max_redrives: Annotated[int | None, typer.Option(
        min=1, help="retire letters that have failed this many redrives: not redriven, not "
                    "put back (default: every letter is tried)")] = None,
) -> None:
    """Re-validate pending dead letters: valid events go to interactions, valid catalogue
    records to items, the rest back."""
    ask = not (dry_run or yes)
    if ask and not sys.stdin.isatty():  # CI, a pipe: nobody to ask, so do nothing
        typer.echo("refusing to redrive without confirmation: stdin is not a terminal; "
                   "pass --yes", err=True)
        raise typer.Exit(1)
    settings = load_settings()
    with DeadLetterQueue(settings.kafka, settings.topic_dlq, group) as queue:
        spans = queue.pending()
        _warn_expired(spans, settings.topic_dlq, group)
        if ask and letters(spans) and not typer.confirm(
                f"redrive {letters(spans):,} dead letters from {settings.topic_dlq} to "
                f"{settings.topic_interactions} (catalogue records to {settings.topic_items})?"):
            raise typer.Exit(1)
        with progress_bar("redrive", letters(spans)) as update:
            report = redrive(queue, spans, settings.topic_interactions,
                             items=settings.topic_items, only=reason, dry_run=dry_run,
                             on_progress=lambda r: update(r.read), max_redrives=max_redrives)
            update(report.read)
    console.print(_line(report, dry_run), markup=False)
