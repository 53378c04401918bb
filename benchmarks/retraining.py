"""Retraining vs a frozen champion, online, through Kafka and a real worker.

    python -m benchmarks.retraining                      # synthetic log with drifting tastes
    python -m benchmarks.retraining --data ../shared/data/ml-latest-small/ratings.csv \\
        --format movielens

A time-ordered log is cut into A (first 60%), B (next 20%) and C (last 20%). A goes to the
interactions topic and ``streamrec trainer --once`` trains the first champion on it. Then,
in two runs on their own topics, a worker serves everything (A as a backlog, then B and C
replayed):
- frozen: the first champion serves B and C;
- retrain: after B, ``streamrec trainer --once`` retrains on A + B; when the gate promotes
  the challenger, the worker swaps to it before C is replayed.
Reported: prequential HR@10 / NDCG@10 / MRR on C (the list shown after each user's previous
event, scored against the next one), the gate's figures and whether the worker swapped
(read from the trainer's and the worker's status files, ``streams.status``).
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

import orjson

from model.evaluation.metrics import hit_rate, mrr, ndcg
from model.evaluation.protocols import prequential_ranks
from services.processes import ServiceProcess, WorkerFailed, isolated_run, trainer_round
from services.settings import Settings, load_settings
from services.stack import build_stack
from services.trainer import describe_round
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import EventProducer
from streams.readers import read_valid_events
from streams.replay import replay
from streams.status import RoundSummary, WorkerStatus
from streams.synthetic import SyntheticConfig, generate


def _produce(settings: Settings, env: dict[str, str], events: list[Event]) -> None:
    replay(iter(events), EventProducer(settings.kafka,
                                       env["STREAMREC_TOPIC_INTERACTIONS"],
                                       env["STREAMREC_TOPIC_DLQ"], source="bench"))


def _trainer(env: dict[str, str], epochs: int, status: Path) -> RoundSummary:
    """One ``streamrec trainer --once`` round, as its status file reports it."""
    try:
        return trainer_round(env, status, "--epochs", str(epochs))
    except WorkerFailed as exc:
        raise SystemExit(f"trainer failed: {exc}") from None


def _lists(settings: Settings, env: dict[str, str], count: int) -> dict[str, list[str]]:
    out = {}
    for r in read_topic(settings.kafka, env["STREAMREC_TOPIC_RECOMMENDATIONS"],
                        from_beginning=True, limit=count, idle_timeout_s=120):
        value = orjson.loads(r.value)
        out[value["event_id"]] = [i["item_id"] for i in value["items"]]
    if len(out) < count:
        raise SystemExit(f"only {len(out):,} of {count:,} lists arrived")
    return out


def _run(settings: Settings, base: dict[str, str], parts: tuple[list, list, list], mode: str,
         epochs: int, folder: Path) -> dict:
    a, b, c = parts
    env = {**base, **isolated_run(settings, f"bench-retrain-{mode}-{uuid.uuid4().hex[:6]}")}
    _produce(settings, env, a)
    gate = ""
    if mode == "frozen":  # the first champion, shared by both runs (same store)
        first = _trainer(env, epochs, folder / "first-round.status.json")
        print(f"  first champion on A ({len(a):,} events): {describe_round(first)}", flush=True)
    worker = ServiceProcess.start(env, folder / f"{mode}.log", "worker", "--worker-id", mode,
                                 "--metrics-port", "0", status=True)
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        _produce(settings, env, b)
        _lists(settings, env, len(a) + len(b))
        swapped = False
        if mode == "retrain":
            retrained = _trainer(env, epochs, folder / "retrain-round.status.json")
            gate = describe_round(retrained)
            print(f"  retrain on A + B ({len(a) + len(b):,} events): {gate}", flush=True)
            swapped = retrained.outcome == "promoted" and worker.wait_status(
                WorkerStatus, lambda w: w.swaps_applied >= 1, 180) is not None
        _produce(settings, env, c)
        lists = _lists(settings, env, len(a) + len(b) + len(c))
    finally:
        worker.stop()
    ranks = prequential_ranks(c, lists)
    return {"HR@10": hit_rate(ranks, 10), "NDCG@10": ndcg(ranks, 10), "MRR": mrr(ranks),
            "scored": len(ranks), "gate": gate, "swapped": swapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()

    settings = load_settings()
    build_stack(settings).up()
    if args.data is not None:
        log, name = read_valid_events(args.data, args.format), args.data.parent.name
    else:
        log = list(generate(SyntheticConfig(users=2_000, items=1_000, events=60_000,
                                            drift_at=0.6, seed=13)))
        name = "synthetic, tastes drift at 60% of the timeline"
    cut_a, cut_b = int(len(log) * 0.6), int(len(log) * 0.8)
    parts = (log[:cut_a], log[cut_a:cut_b], log[cut_b:])
    run = uuid.uuid4().hex[:6]
    folder = settings.data_dir / "bench" / f"retraining-{run}"
    folder.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "STREAMREC_DATA_DIR": str(folder),
            "STREAMREC_TRAINER_MIN_EVENTS": "100"}
    print(f"{name}: A {len(parts[0]):,}, B {len(parts[1]):,}, C {len(parts[2]):,} events; "
          f"training capped at {args.epochs} epochs", flush=True)
    rows = {mode: _run(settings, base, parts, mode, args.epochs, folder)
            for mode in ("frozen", "retrain")}
    print(f"\nprequential on C ({rows['frozen']['scored']:,} scored next events), {name}")
    print(f"{'':<10}{'HR@10':>8}{'NDCG@10':>9}{'MRR':>8}  swapped before C")
    for mode, r in rows.items():
        print(f"{mode:<10}{r['HR@10']:>8.4f}{r['NDCG@10']:>9.4f}{r['MRR']:>8.4f}  "
              f"{r['swapped'] if mode == 'retrain' else '-'}")
    gain = rows["retrain"]["HR@10"] / rows["frozen"]["HR@10"] if rows["frozen"]["HR@10"] else 0
    print(f"retrain / frozen HR@10: {gain:.2f}x; gate: {rows['retrain']['gate']}")
    print(f"logs and MLflow store: {folder}")


if __name__ == "__main__":
    main()
