"""``streamrec demo``: the whole job end to end on the local stack.

Stack up; split a log by time (a synthetic one by default); train SASRec + NeuMF on the
past and register them as champion; start a worker; replay the future through Kafka; read
the recommendations back; report online quality (prequential: the list shown after each
event, scored against that user's next event), send-to-publish latency and throughput.
Each run uses its own topics (``demo-<run>.*``) so its report counts only its own events.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.cli_events import Format
from services.progress import progress_bar
from services.settings import load_settings
from services.stack import build_stack
from services.worker_process import CLI, WorkerFailed, WorkerProcess, isolated_run
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import EventProducer
from streams.readers import read_valid_events
from streams.replay import replay
from streams.synthetic import SyntheticConfig, generate

app = typer.Typer()
console = Console()


def _write(path: Path, events: list[Event]) -> None:
    path.write_bytes(b"".join(e.to_json() + b"\n" for e in events))


@app.command()
def demo(
    data: Annotated[Path | None, typer.Option(help="a log to use instead of synthetic data")]
        = None,
    fmt: Annotated[Format | None, typer.Option("--format", "-f")] = None,
    events: Annotated[int, typer.Option(help="synthetic events")] = 60_000,
    train_fraction: Annotated[float, typer.Option(help="the past the model learns from")] = 0.8,
    rate: Annotated[float, typer.Option(help="replay rate, events/s")] = 500,
    epochs: Annotated[int, typer.Option(help="training epochs cap")] = 30,
) -> None:
    """Run the whole pipeline on the local stack and print a report."""
    from model.data import time_split
    from model.evaluation import prequential_ranks
    from model.metrics import hit_rate, mrr, ndcg

    settings = load_settings()
    build_stack(settings).up(say=lambda line: console.print(f"  {line}"))
    run = uuid.uuid4().hex[:8]
    folder = settings.data_dir / "demo" / run
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        if fmt is None:
            raise typer.BadParameter("--format is required with --data")
        log = read_valid_events(data, fmt.value)
        source = str(data)
    else:
        log = list(generate(SyntheticConfig(users=2_000, items=1_000, events=events)))
        source = f"synthetic ({events:,} events, 2,000 users, 1,000 items)"
    past, future = time_split(log, train_fraction)
    _write(folder / "train.jsonl", past)
    _write(folder / "replay.jsonl", future)
    console.print(f"[bold]data[/] {source}: train on {len(past):,} events, "
                  f"replay {len(future):,}")

    topics = isolated_run(settings, f"demo-{run}")
    group = topics["STREAMREC_WORKER_GROUP"]
    env = {**os.environ, **topics}
    console.print("[bold]train[/] SASRec + NeuMF reranker, register as champion ...")
    trained = subprocess.run([*CLI, "train", "--data", str(folder / "train.jsonl"), "--format",
                              "jsonl", "--model", "all", "--epochs", str(epochs), "--champion"],
                             env=env, capture_output=True, text=True)
    if trained.returncode != 0:
        raise typer.Exit(f"training failed:\n{trained.stderr[-2000:]}")
    for line in trained.stdout.splitlines():
        console.print(f"  {line}")

    console.print("[bold]worker[/] starting ...")
    worker = WorkerProcess.start(env, folder / "worker.log", "--worker-id", f"demo-{run}")
    try:
        try:
            worker.wait_joined(settings.kafka_servers, group)
        except WorkerFailed as exc:
            raise typer.Exit(str(exc)) from None
        producer = EventProducer(settings.kafka_servers, topics["STREAMREC_TOPIC_INTERACTIONS"],
                                 topics["STREAMREC_TOPIC_DLQ"], source="demo")
        fields = "{task.fields[rate]:>6,.0f} ev/s"
        with progress_bar("replay", len(future), fields) as update:
            summary = replay(iter(future), producer, rate=rate,
                             on_progress=lambda s: update(s.read, rate=s.events_per_s))
        console.print(f"[bold]replay[/] sent {summary.sent:,} in {summary.seconds:.1f} s")
        lists: dict[str, list[str]] = {}
        paths: dict[str, int] = {}
        latency_ms, sent_first, published_last = [], None, 0
        with progress_bar("recommendations", summary.sent) as update:
            for n, rec in enumerate(read_topic(
                    settings.kafka_servers, topics["STREAMREC_TOPIC_RECOMMENDATIONS"],
                    from_beginning=True, limit=summary.sent, idle_timeout_s=30), 1):
                value = orjson.loads(rec.value)
                lists[value["event_id"]] = [i["item_id"] for i in value["items"]]
                paths[value["path"]] = paths.get(value["path"], 0) + 1
                if value["sent_us"]:
                    latency_ms.append((value["published_us"] - value["sent_us"]) / 1000)
                    sent_first = min(sent_first or value["sent_us"], value["sent_us"])
                published_last = max(published_last, value["published_us"])
                if n % 500 == 0:
                    update(n)
    finally:
        worker.stop()

    ranks = prequential_ranks(future, lists)
    lat = np.percentile(latency_ms, [50, 95, 99]) if latency_ms else [float("nan")] * 3
    span_s = (published_last - sent_first) / 1e6 if sent_first else float("nan")
    table = Table("", "value", title=f"streamrec demo {run}")
    table.add_row("events replayed", f"{summary.sent:,}")
    table.add_row("recommendation lists published", f"{len(lists):,}  ({paths})")
    table.add_row("online HR@10 (prequential)", f"{hit_rate(ranks, 10):.4f}")
    table.add_row("online NDCG@10", f"{ndcg(ranks, 10):.4f}")
    table.add_row("online MRR", f"{mrr(ranks):.4f}")
    table.add_row("scored next events", f"{len(ranks):,}")
    table.add_row("latency send→publish p50 / p95 / p99",
                  f"{lat[0]:.1f} / {lat[1]:.1f} / {lat[2]:.1f} ms")
    table.add_row("throughput (first send → last publish)",
                  f"{len(lists) / span_s:,.0f} events/s at a {rate:,.0f}/s replay")
    console.print(table)
    console.print(f"topics demo-{run}.*, group {group}; worker log {folder / 'worker.log'}")
