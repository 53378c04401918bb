"""``streamrec demo``: the whole loop end to end on the local stack.

Stack up; split a log by time (synthetic with drifting tastes by default); the past goes
to Kafka and ``streamrec trainer --once`` makes the first champion (retriever SASRec +
ranker NeuMF) from it; a worker catches up on the past, then the future is replayed live
while a long-running trainer waits beside the worker. The report gives online quality
(prequential: the list shown after each event, scored against that user's next event),
send-to-publish latency and throughput of the live part; then the trainer's round on past
+ future runs, and when it promotes, the worker swaps. The API runs beside the worker for
the whole job: its dashboard shows the live figures and any user's list as it changes.
Each run uses its own topics (``demo-<run>.*``) so its report counts only its own events,
and its own model registry (database and artifacts in its folder), so its first champion
has learnt this run's past and nothing of its future: a shared registry kept the champion
of an earlier run of the same log, which had learnt the events the report then scored it
on. The demo follows the worker and the trainer through their status files
(``streams.status``), never through their logs.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from infra.urls import mask_urls
from services.cli_events import Columns, Format, columns_of, number_within
from services.processes import (
    ServiceProcess,
    WorkerFailed,
    free_port,
    isolated_run,
    trainer_round,
)
from services.progress import progress_bar
from services.settings import Settings, load_settings
from services.stack import build_stack
from services.trainer import describe_round
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import EventProducer
from streams.readers import read_valid_events
from streams.replay import replay
from streams.status import TrainerStatus, WorkerStatus
from streams.synthetic import SyntheticConfig, generate

app = typer.Typer()
console = Console()
WORKER_CHECK_S = 5.0  # quiet on the lists topic before asking whether the worker exited


@dataclass(frozen=True)
class _Run:
    """One demo run: its id, the environment its services get (its own topics and consumer
    group, from ``isolated_run``) and the folder for their logs and status files."""

    id: str
    settings: Settings
    env: dict[str, str]
    folder: Path

    def topic(self, name: str) -> str:
        """The run's own topic for ``name`` (``interactions``, ``recommendations``, ...)."""
        return self.env[f"STREAMREC_TOPIC_{name.upper()}"]

    @property
    def group(self) -> str:
        return self.env["STREAMREC_WORKER_GROUP"]


@dataclass(frozen=True)
class _Services:
    """The processes beside the demo; ``serving`` is the worker's status once it joined,
    before any swap."""

    worker: ServiceProcess
    trainer: ServiceProcess
    api_url: str
    serving: WorkerStatus


def _produce(run: _Run, events: list[Event], label: str, rate: float | None = None) -> float:
    """Replay ``events`` into the run's interactions topic; returns the seconds it took.
    Stops the demo when any was not delivered: the report would blame the worker."""
    producer = EventProducer(run.settings.kafka, run.topic("interactions"),
                             run.topic("dlq"), source="demo")
    fields = "{task.fields[rate]:>7,.0f} ev/s"
    with progress_bar(label, len(events), fields) as update:
        summary = replay(iter(events), producer, rate=rate,
                         on_progress=lambda s: update(s.read, rate=s.events_per_s))
    if summary.failed or summary.sent != len(events):
        raise typer.Exit(f"{label}: {summary.sent:,} of {len(events):,} events sent to "
                         f"{run.topic('interactions')}, {summary.dead_lettered:,} "
                         f"dead-lettered, {summary.failed:,} not delivered")
    return summary.seconds


def _collect(run: _Run, events: list[Event], label: str, worker: ServiceProcess) -> list[dict]:
    """The first list of each of ``events`` on the run's recommendations topic, read from
    its beginning: a list answered again (at least once, after a rebalance) counts once,
    where counting records let it push a later event's list out. An event id met twice
    is answered once (the worker drops the repeat), so ids are counted, not events.
    Stops once the topic has been quiet for ``WORKER_CHECK_S`` and the worker has exited
    (else it would wait a minute for lists; a reader that has just joined reads nothing
    for a moment, while the lists of a worker that published them all are there)."""
    topic, first, count = run.topic("recommendations"), {}, len({e.event_id for e in events})

    def check(quiet_s: float) -> None:
        if quiet_s > WORKER_CHECK_S:
            worker.raise_if_exited()

    with progress_bar(label, count) as update:
        for rec in read_topic(run.settings.kafka, topic, from_beginning=True,
                              idle_timeout_s=60, on_idle=check):
            value = orjson.loads(rec.value)
            first.setdefault(value["event_id"], value)
            if len(first) % 500 == 0:
                update(len(first))
            if len(first) >= count:
                break
        update(len(first))
    if len(first) < count:
        raise typer.Exit(f"only {len(first):,} of {count:,} lists arrived on {topic} within "
                         f"a minute of the last; worker log {worker.log}")
    return list(first.values())


def _report(run: str, past: list[Event], future: list[Event], values: list[dict],
            rate: float) -> Table:
    """Online quality, latency and throughput over the replayed events' lists. A user's
    first live event is judged by the list after their last past event, the one shown
    before it."""
    from model.evaluation.metrics import hit_rate, mrr, ndcg
    from model.evaluation.protocols import prequential_ranks

    last_past = {e.user_id: e for e in past}  # time order: each user's newest
    seeds = [last_past[u] for u in dict.fromkeys(e.user_id for e in future) if u in last_past]
    wanted = {e.event_id for e in future}
    mine = [v for v in values if v["event_id"] in wanted]
    shown = wanted | {e.event_id for e in seeds}
    lists = {v["event_id"]: [i["item_id"] for i in v["items"]] for v in values
             if v["event_id"] in shown}
    paths = Counter(v["path"] for v in mine)
    ranks = prequential_ranks(seeds + future, lists)
    latency = [(v["published_us"] - v["sent_us"]) / 1000 for v in mine if v["sent_us"]]
    span_s = (max(v["published_us"] for v in mine) -
              min(v["sent_us"] or v["published_us"] for v in mine)) / 1e6
    table = Table("", "value", title=f"streamrec demo {run}")
    table.add_row("events replayed live", f"{len(future):,}")
    table.add_row("recommendation lists published", f"{len(mine):,}  (" + ", ".join(
        f"{path} {n:,}" for path, n in paths.most_common()) + ")")

    def figure(value: float) -> str:
        return f"{value:.4f}" if len(ranks) else "n/a (no next event)"

    table.add_row("online HR@10 (prequential)", figure(hit_rate(ranks, 10)))
    table.add_row("online NDCG@10", figure(ndcg(ranks, 10)))
    table.add_row("online MRR", figure(mrr(ranks)))
    table.add_row("scored next events", f"{len(ranks):,}")
    quantiles = " / ".join(f"{q:.1f}" for q in np.percentile(latency, [50, 95, 99])) \
        if latency else None
    table.add_row("latency send→publish p50 / p95 / p99", f"{quantiles} ms" if quantiles
                  else "n/a (no list carries its event's send time)")
    table.add_row("throughput (first send → last publish)",
                  f"{len(mine) / span_s:,.0f} events/s at a {rate:,.0f}/s replay" if span_s
                  else "n/a (no time between first send and last publish)")
    return table


def _prepare_data(data: Path | None, fmt: Format | None, events: int | None,
                  train_fraction: float, rate: float, min_past: int,
                  columns: tuple[str, ...] = ()) -> tuple[list[Event], list[Event]]:
    """The log split by time: the past (to Kafka first; the first champion learns it,
    ``min_past`` events at least) and the future (replayed live), both refused in one
    line before the stack starts when they cannot make a run."""
    from model.data import time_split

    if data is None and (fmt is not None or columns):
        raise typer.BadParameter(f"{'--format' if fmt else '--columns'} needs --data (the log "
                                 "it describes)")
    if data is not None and events is not None:  # it was ignored without a word
        raise typer.BadParameter("--events sizes the synthetic log: it does not go with --data")
    if data is not None:
        if fmt is None:
            raise typer.BadParameter("--format is required with --data")
        log, source = read_valid_events(data, fmt.value, columns), str(data)
    else:  # tastes drift late in the timeline: retraining on the live log pays off
        synthetic = SyntheticConfig(users=2_000, items=1_000, events=events or 60_000,
                                    drift_at=0.7)
        log = list(generate(synthetic))
        source = (f"synthetic ({synthetic.events:,} events, {synthetic.users:,} users, "
                  f"{synthetic.items:,} items, drifting tastes)")
    past, future = time_split(log, train_fraction)
    if len(past) < min_past or not future:
        raise typer.BadParameter(
            f"{source}: the past holds {len(past):,} events and the future {len(future):,}; "
            f"training needs {min_past:,} (STREAMREC_TRAINER_MIN_EVENTS) and the replay "
            "one at least: a longer log, or another --train-fraction")
    console.print(f"[bold]data[/] {source}: the past ({len(past):,} events) goes to Kafka "
                  f"first, the future ({len(future):,}) is replayed live at {rate:,.0f}/s")
    return past, future


def _first_champion(run: _Run, epochs: int) -> None:
    """``trainer --once`` on the past, into the run's own registry: its model is the
    first champion, or the demo stops."""
    console.print("[bold]trainer --once[/]: retriever (SASRec) + ranker (NeuMF) from the "
                  "topic, into this run's registry")
    try:
        with progress_bar("training the first champion", None):
            first = trainer_round(run.env, run.folder / "first-round.status.json",
                                  "--epochs", str(epochs))
    except WorkerFailed as exc:
        raise typer.Exit(mask_urls(f"the training round failed: {exc}")) from None
    if first.outcome != "promoted":
        raise typer.Exit(f"the training round made no champion: {describe_round(first)}")
    console.print(f"  {describe_round(first)}", soft_wrap=True)


@contextmanager
def _services(run: _Run, future: list[Event], epochs: int) -> Iterator[_Services]:
    """Worker and API, then the long-running trainer, stopped however the demo ends. The
    trainer starts (imports, registry) while the worker catches up, not during the replay;
    its next round is due once the future has arrived."""
    with ExitStack() as running:
        worker = ServiceProcess.start(run.env, run.folder / "worker.log", "worker",
                                      "--worker-id", f"demo-{run.id}", status=True)
        running.callback(worker.stop)
        api_port = free_port(run.settings.api_port)  # a user's own API may hold the port
        api_url = f"http://127.0.0.1:{api_port}"
        api = ServiceProcess.start({**run.env, "STREAMREC_API_PORT": str(api_port)},
                                   run.folder / "api.log", "api")
        running.callback(api.stop)
        with progress_bar("worker and API starting", None):
            worker.wait_joined(run.settings.kafka, run.group)
            api.wait_http(f"{api_url}/healthz")
        serving = worker.wait_status(WorkerStatus)
        if serving is None:
            raise WorkerFailed(f"the worker wrote no status to {worker.status}; log {worker.log}")
        watch = Counter(e.user_id for e in future).most_common(1)[0][0]
        console.print(f"[bold]api[/] {api_url}/ : open the dashboard and watch user "
                      f"[bold]{watch}[/] while the future is replayed; lists: "
                      f"{api_url}/v1/users/{quote(watch, safe='')}/recommendations")
        trainer = ServiceProcess.start(run.env, run.folder / "trainer.log", "trainer",
                                       "--interval-min", "0", "--every-events",
                                       str(len(future)), "--epochs", str(epochs), status=True)
        running.callback(trainer.stop)
        yield _Services(worker, trainer, api_url, serving)


def _live(run: _Run, services: _Services, past: list[Event], future: list[Event],
          rate: float) -> None:
    """The worker catches up on the past; once the trainer is ready (it has counted the
    topic, so the future counts towards its trigger) the future is replayed live and the
    report printed."""
    _collect(run, past, "worker catching up on the past", services.worker)
    with progress_bar("trainer starting", None):
        ready = services.trainer.wait_status(TrainerStatus, lambda t: t.state == "ready", 180)
    if ready is None:
        raise typer.Exit(f"the trainer did not start; log {services.trainer.log}")
    seconds = _produce(run, future, "replay", rate)
    console.print(f"[bold]replay[/] sent {len(future):,} in {seconds:.1f} s")
    values = _collect(run, past + future, "recommendations", services.worker)
    console.print(_report(run.id, past, future, values, rate))


def _retraining(services: _Services) -> None:
    """The trainer's round on past + future and, when it promotes, the worker's swap."""
    console.print("[bold]trainer[/]: retraining on past + future beside the worker "
                  "(a few minutes) ...")
    with progress_bar("retraining", None):
        status = services.trainer.wait_status(TrainerStatus, lambda t: t.rounds >= 1, 1200)
    summary = status.last_round if status else None
    if summary is None:
        raise typer.Exit("the retraining round did not end within 20 minutes; log "
                         f"{services.trainer.log}")
    if summary.outcome == "failed":
        raise typer.Exit(f"the retraining round failed: {describe_round(summary)}; log "
                         f"{services.trainer.log}")
    console.print(f"  {describe_round(summary)}", soft_wrap=True)
    if summary.outcome == "promoted":
        swapped, line = _swap(services.worker, services.serving)
        if not swapped:
            raise typer.Exit(f"worker: {line}; log {services.worker.log}")
        console.print(f"  worker: {line}", soft_wrap=True)


def _swap(worker: ServiceProcess, before: WorkerStatus) -> tuple[bool, str]:
    """Whether the worker swapped the announced champion in, and what it did: swapped,
    refused it (and kept serving), or nothing within two minutes."""
    after = worker.wait_status(
        WorkerStatus, lambda w: (w.swaps_applied, w.swaps_failed)
        != (before.swaps_applied, before.swaps_failed), 120)
    if after is None:
        return False, "no swap seen within 2 minutes"
    if after.swaps_applied > before.swaps_applied:
        return True, f"model swapped: {before.model_version} -> {after.model_version}"
    return False, f"swap failed, still serving {after.model_version}: {after.last_error}"


def _exit_on_signal(signum: int, _: object) -> None:
    """SIGTERM or SIGHUP (a CI timeout, a closed terminal) as an exit, so the services the
    demo started are stopped on the way out rather than left running."""
    sys.exit(128 + signum)


@app.command()
def demo(
    data: Annotated[Path | None, typer.Option(help="a log to use instead of synthetic data")]
        = None,
    fmt: Annotated[Format | None, typer.Option("--format", "-f")] = None,
    events: Annotated[int | None, typer.Option(
        min=1, help="synthetic events (default 60,000); not with --data")] = None,
    train_fraction: Annotated[float, typer.Option(
        callback=lambda v: number_within(v, 0.0, 1.0, "--train-fraction"),
        help="the past the model learns from")] = 0.8,
    rate: Annotated[float, typer.Option(
        callback=lambda v: number_within(v, 0.0, math.inf, "--rate"),
        help="replay rate, events/s")] = 500,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs cap")] = 30,
    columns: Columns = None,
) -> None:
    """Run the whole loop on the local stack: first champion from the log's past, a worker
    answering the replayed future, a report, then the trainer retraining beside the worker."""
    names = columns_of(columns)
    settings = load_settings()
    past, future = _prepare_data(data, fmt, events, train_fraction, rate,  # before the stack
                                 settings.trainer_min_events, names)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _exit_on_signal)
    build_stack(settings).up(say=lambda line: console.print(f"  {line}"))
    run_id = uuid.uuid4().hex[:8]
    folder = settings.data_dir / "demo" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    run = _Run(run_id, settings, {**os.environ, **isolated_run(settings, f"demo-{run_id}"),
                                  "STREAMREC_WORKER_METRICS_PORT": "0",
                                  "STREAMREC_MLFLOW_TRACKING_URI":
                                      f"sqlite:///{folder / 'mlflow.db'}"}, folder)
    _produce(run, past, "past")
    _first_champion(run, epochs)
    try:
        with _services(run, future, epochs) as services:
            _live(run, services, past, future, rate)
            _retraining(services)
            if sys.stdin.isatty():  # a person is watching: leave the API up to explore
                console.print(f"[bold]the worker and API keep running[/]: {services.api_url}/ "
                              f"; send a click with curl -X POST {services.api_url}/v1/events "
                              + ("-H 'X-API-Key: <your key>' " if run.settings.api_key else "")
                              + "-d '<event JSON>' (README) and watch the list change. Press "
                              "Enter to stop.")
                input()
    except WorkerFailed as exc:  # with its log's tail, which may quote a URL
        raise typer.Exit(mask_urls(str(exc))) from None
    console.print(f"topics demo-{run.id}.*, group {run.group}; logs and this run's model "
                  f"registry (STREAMREC_MLFLOW_TRACKING_URI=sqlite:///{folder / 'mlflow.db'}) "
                  f"in {folder}")
