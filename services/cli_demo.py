"""``streamrec demo``: the whole loop end to end on the local stack.

Stack up; split a log by time (synthetic with drifting tastes by default); the past goes
to Kafka and ``streamrec trainer --once`` makes the first champion (SASRec + NeuMF) from
it; a worker catches up on the past, then the future is replayed live while a
long-running trainer waits beside the worker. The report gives online quality
(prequential: the list shown after each event, scored against that user's next event),
send-to-publish latency and throughput of the live part; then the trainer's round on past
+ future runs, and when it promotes, the worker swaps. The API runs beside the worker for
the whole job: its dashboard shows the live figures and any user's list as it changes.
Each run uses its own topics (``demo-<run>.*``) so its report counts only its own events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.cli_events import Format
from services.processes import CLI, ServiceProcess, WorkerFailed, free_port, isolated_run
from services.progress import progress_bar
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import EventProducer
from streams.readers import read_valid_events
from streams.replay import replay
from streams.synthetic import SyntheticConfig, generate

app = typer.Typer()
console = Console()


def _produce(settings: Settings, topics: dict[str, str], events: list[Event], label: str,
             rate: float | None = None) -> float:
    """Replay ``events`` into the run's interactions topic; returns the seconds it took."""
    producer = EventProducer(settings.kafka_servers, topics["STREAMREC_TOPIC_INTERACTIONS"],
                             topics["STREAMREC_TOPIC_DLQ"], source="demo")
    fields = "{task.fields[rate]:>7,.0f} ev/s"
    with progress_bar(label, len(events), fields) as update:
        summary = replay(iter(events), producer, rate=rate,
                         on_progress=lambda s: update(s.read, rate=s.events_per_s))
    return summary.seconds


def _collect(settings: Settings, topic: str, count: int, label: str) -> list[dict]:
    """The first ``count`` lists on ``topic`` (all of them, from the beginning)."""
    values = []
    with progress_bar(label, count) as update:
        for n, rec in enumerate(read_topic(settings.kafka_servers, topic, from_beginning=True,
                                           limit=count, idle_timeout_s=60), 1):
            values.append(orjson.loads(rec.value))
            if n % 500 == 0:
                update(n)
    if len(values) < count:
        raise typer.Exit(f"only {len(values):,} of {count:,} lists arrived on {topic}")
    return values


def _report(run: str, future: list[Event], values: list[dict], rate: float) -> Table:
    """Online quality, latency and throughput over the replayed events' lists."""
    from model.evaluation.metrics import hit_rate, mrr, ndcg
    from model.evaluation.protocols import prequential_ranks

    wanted = {e.event_id for e in future}
    mine = [v for v in values if v["event_id"] in wanted]
    lists = {v["event_id"]: [i["item_id"] for i in v["items"]] for v in mine}
    paths: dict[str, int] = {}
    for v in mine:
        paths[v["path"]] = paths.get(v["path"], 0) + 1
    ranks = prequential_ranks(future, lists)
    latency = [(v["published_us"] - v["sent_us"]) / 1000 for v in mine if v["sent_us"]]
    lat = np.percentile(latency, [50, 95, 99]) if latency else [float("nan")] * 3
    span_s = (max(v["published_us"] for v in mine) -
              min(v["sent_us"] or v["published_us"] for v in mine)) / 1e6
    table = Table("", "value", title=f"streamrec demo {run}")
    table.add_row("events replayed live", f"{len(future):,}")
    table.add_row("recommendation lists published", f"{len(lists):,}  ({paths})")
    table.add_row("online HR@10 (prequential)", f"{hit_rate(ranks, 10):.4f}")
    table.add_row("online NDCG@10", f"{ndcg(ranks, 10):.4f}")
    table.add_row("online MRR", f"{mrr(ranks):.4f}")
    table.add_row("scored next events", f"{len(ranks):,}")
    table.add_row("latency send→publish p50 / p95 / p99",
                  f"{lat[0]:.1f} / {lat[1]:.1f} / {lat[2]:.1f} ms")
    table.add_row("throughput (first send → last publish)",
                  f"{len(lists) / span_s:,.0f} events/s at a {rate:,.0f}/s replay")
    return table


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
    """Run the whole loop on the local stack: first champion from the log's past, a worker
    answering the replayed future, a report, then the trainer retraining beside the worker."""
    from model.data import time_split

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
    else:  # tastes drift late in the timeline: retraining on the live log pays off
        log = list(generate(SyntheticConfig(users=2_000, items=1_000, events=events,
                                            drift_at=0.7)))
        source = f"synthetic ({events:,} events, 2,000 users, 1,000 items, drifting tastes)"
    past, future = time_split(log, train_fraction)
    console.print(f"[bold]data[/] {source}: the past ({len(past):,} events) goes to Kafka "
                  f"first, the future ({len(future):,}) is replayed live at {rate:,.0f}/s")

    topics = isolated_run(settings, f"demo-{run}")
    group = topics["STREAMREC_WORKER_GROUP"]
    env = {**os.environ, **topics, "STREAMREC_WORKER_METRICS_PORT": "0"}
    _produce(settings, topics, past, "past")
    console.print("[bold]trainer --once[/]: SASRec + NeuMF from the topic, gated against the "
                  "registry's champion if there is one")
    first = subprocess.run([*CLI, "trainer", "--once", "--epochs", str(epochs)], env=env,
                           capture_output=True, text=True)
    verdict = [ln for ln in first.stderr.splitlines() if ln.startswith(("promoted", "rejected"))]
    if first.returncode != 0 or not verdict:  # rejected is fine: the champion stays
        raise typer.Exit(f"the training round failed:\n{first.stderr[-2000:]}")
    console.print(f"  {verdict[-1]}", soft_wrap=True)

    worker = ServiceProcess.start(env, folder / "worker.log", "worker", "--worker-id",
                                  f"demo-{run}")
    api_port = free_port(settings.api_port)  # a user's own API may hold the configured one
    api_url = f"http://127.0.0.1:{api_port}"
    api = ServiceProcess.start({**env, "STREAMREC_API_PORT": str(api_port)},
                               folder / "api.log", "api")
    trainer = None
    try:
        try:
            worker.wait_joined(settings.kafka_servers, group)
            api.wait_http(f"{api_url}/healthz")
        except WorkerFailed as exc:
            raise typer.Exit(str(exc)) from None
        watch = Counter(e.user_id for e in future).most_common(1)[0][0]
        console.print(f"[bold]api[/] {api_url}/ : open the dashboard and watch user "
                      f"[bold]{watch}[/] while the future is replayed; lists: "
                      f"{api_url}/v1/users/{watch}/recommendations")
        # The long-running trainer: its next round starts once the future has arrived. It
        # starts (imports, registry) while the worker catches up, not during the replay.
        trainer = ServiceProcess.start(env, folder / "trainer.log", "trainer", "--interval-min",
                                       "0", "--every-events", str(len(future)),
                                       "--epochs", str(epochs))
        _collect(settings, topics["STREAMREC_TOPIC_RECOMMENDATIONS"], len(past),
                 "worker catching up on the past")
        if trainer.wait_for("trainer ready", 180) is None:  # its count excludes the future
            raise typer.Exit(f"the trainer did not start; log {trainer.log}")
        seconds = _produce(settings, topics, future, "replay", rate)
        console.print(f"[bold]replay[/] sent {len(future):,} in {seconds:.1f} s")
        values = _collect(settings, topics["STREAMREC_TOPIC_RECOMMENDATIONS"],
                          len(past) + len(future), "recommendations")
        console.print(_report(run, future, values, rate))
        console.print("[bold]trainer[/]: retraining on past + future beside the worker "
                      "(a few minutes) ...")
        outcome = trainer.wait_for("round outcome=", 1200)
        console.print(f"  {outcome.split('streamrec.trainer ')[-1] if outcome else 'no round'}")
        if outcome and "outcome=promoted" in outcome:
            swapped = worker.wait_for("model swapped", 120)
            console.print(f"  worker: {swapped.split('] ')[-1] if swapped else 'no swap seen'}")
        if sys.stdin.isatty():  # a person is watching: leave the API up to explore
            console.print(f"[bold]the worker and API keep running[/]: {api_url}/ ; send a "
                          f"click with curl -X POST {api_url}/v1/events -d '<event JSON>' "
                          "(README) and watch the list change. Press Enter to stop.")
            input()
    finally:
        if trainer is not None:
            trainer.stop()
        api.stop()
        worker.stop()
    console.print(f"topics demo-{run}.*, group {group}; logs {folder}")
