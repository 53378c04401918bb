"""``streamrec catalog load``: a catalogue file onto the items topic."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.progress import progress_bar
from services.settings import load_settings
from streams.catalog_files import CATALOG_FORMATS, RejectedItem, scan_catalog
from streams.producer import ItemProducer

app = typer.Typer(help="The item catalogue: load it onto the items topic.",
                  no_args_is_help=True)
console = Console()

CatalogFormat = StrEnum("CatalogFormat", {name: name for name in CATALOG_FORMATS})  # type: ignore[misc]
_PROGRESS_EVERY = 500


def _count(path: Path, fmt: str, id_map: Path | None) -> int:
    """The file's records, read through once with a bar (millions of Amazon records took
    minutes of silence), so a file not in the format stops before anything is sent."""
    count = 0
    with progress_bar(f"check {path.name}", None) as counted:
        for count, _ in enumerate(scan_catalog(path, fmt, id_map=id_map), 1):
            if count % _PROGRESS_EVERY == 0:
                counted(count)
    return count


@app.command()
def load(
    path: Annotated[Path, typer.Argument(help="catalogue file")],
    fmt: Annotated[CatalogFormat, typer.Option("--format", "-f", help="file format")],
    id_map: Annotated[Path | None, typer.Option(
        help="amazon: UniSRec's <name>.item2index, when not beside the .text")] = None,
) -> None:
    """Send each record to the items topic (key: item id); records the schema refuses go
    to the dead-letter topic. A file not in the format stops before anything is sent: it
    is read through once for that, then again as it is sent, so a catalogue of millions
    of items (Amazon's metadata) is never held whole."""
    if id_map is not None and fmt.value != "amazon":
        raise typer.BadParameter("only the amazon format reads an id map", param_hint="--id-map")
    settings = load_settings()
    count = _count(path, fmt.value, id_map)  # a file not in the format: one line, no Kafka
    with ItemProducer(settings.kafka, settings.topic_items, settings.topic_dlq,
                      source="streamrec-catalog").check_topics() as producer:
        sent = rejected = 0
        fields = "sent {task.fields[sent]:,}  dead-lettered {task.fields[rejected]:,}"
        with progress_bar(f"load {path.name}", count, fields) as update:
            for n, record in enumerate(scan_catalog(path, fmt.value, id_map=id_map), 1):
                if isinstance(record, RejectedItem):
                    producer.dead_letter(record.raw, record.error)
                    rejected += 1
                else:
                    producer.send(record)
                    sent += 1
                if n % _PROGRESS_EVERY == 0 or n == count:
                    update(n, sent=sent, rejected=rejected)
    stats = producer.stats
    console.print(f"loaded {path} into {settings.topic_items}: sent {sent:,}, dead-lettered "
                  f"{rejected:,} (to {settings.topic_dlq}); records acknowledged (items and "
                  f"letters) {stats.delivered:,}, failed {stats.failed:,}"
                  + (f" ({stats.last_error})" if stats.failed else ""), markup=False,
                  highlight=False)
    if stats.failed:
        raise typer.Exit(1)
