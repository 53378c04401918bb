"""A live experiment through Kafka: two variants of known different quality, replayed.

    python -m benchmarks.experiment_live [--data ../shared/data/ml-latest-small/ratings.csv
        --format movielens] [--events 20000] [--modes interleave,ab]

1. The log in time order, its older half for training a champion (SASRec retriever +
   NeuMF ranker, ``benchmarks.worker.champion_env``: reused by later runs of the same shape);
   the newer half is replayed.
2. Per mode, on fresh topics: an experiment of the champion against recent popularity
   (``control=popularity``, ``treatment=champion``) is started with the CLI, one worker
   serves it, the replay goes in as a backlog, and ``status`` is read every few seconds
   while the worker drains it. Reported: the verdict, the lists published when it was
   first reached, the final figures per variant. The better model (the champion, by the
   offline protocol) must win.
3. Memory: in this process, what a first bundle holds and what a second one (a variant)
   adds, each after serving the same users, and their ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import time
import uuid
from pathlib import Path

import orjson

from benchmarks.worker import champion_env, split_log
from services.processes import CLI, ServiceProcess, isolated_run
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.consumer import topic_size
from streams.events import Event
from streams.producer import EventProducer
from streams.replay import replay

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "experiments-live.json"


def _status(env: dict[str, str], name: str) -> dict:
    done = subprocess.run([*CLI, "experiment", "status", name, "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"status failed: {done.stderr[-2000:]}")
    return orjson.loads(done.stdout.splitlines()[-1])


def live_run(settings: Settings, env: dict[str, str], events: list[Event], mode: str,
             folder: Path) -> dict:
    """One experiment over ``events`` (a backlog), read while a worker drains it."""
    run = f"bench-exp-{mode}-{uuid.uuid4().hex[:6]}"
    env = {**env, **isolated_run(settings, run)}
    name = run.replace("bench-exp-", "")
    started = subprocess.run([*CLI, "experiment", "start", name, "--mode", mode,
                              "--variant", "popularity=popularity:0.5",
                              "--variant", "champion=champion:0.5"],
                             env=env, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        raise SystemExit(f"start failed: {started.stderr[-2000:]}")
    with EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                       env["STREAMREC_TOPIC_DLQ"], source="bench") as producer:
        replay(iter(events), producer)
    worker = ServiceProcess.start(env, folder / f"{run}.log", "worker", "--worker-id", run)
    looks, decided_at, began = [], None, time.perf_counter()
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        while True:
            time.sleep(6)  # past a tally flush (every 5 s)
            published = topic_size(settings.kafka, env["STREAMREC_TOPIC_RECOMMENDATIONS"])
            report = _status(env, name)
            looks.append({"lists": published, "verdict": report["verdict"]})
            print(f"  {mode}: {published:,} lists, {report['verdict']}"
                  + (f" ({report['winner']})" if report["winner"] else ""), flush=True)
            if decided_at is None and report["winner"]:
                decided_at = published
            if published >= len(events):
                break
            if time.perf_counter() - began > 1800:
                raise SystemExit("the worker did not drain the replay in 30 minutes")
    finally:
        worker.stop()  # its last flush: the lists tallied since the last look
    report = _status(env, name)  # so the figures reported are every list's
    print(f"  {mode}: final, {report['verdict']}"
          + (f" ({report['winner']})" if report["winner"] else ""), flush=True)
    return {"mode": mode, "events": len(events), "winner": report["winner"],
            "verdict": report["verdict"], "lists_at_verdict": decided_at,
            "variants": report["variants"], "tests": report["tests"], "looks": looks}


def memory(env: dict[str, str], users: list[Event]) -> dict[str, float]:
    """Memory held by a first bundle and by a second (a variant), each after serving the
    same sessions once: Python and NumPy allocations still live (``tracemalloc``), so
    allocator noise in the RSS does not swamp bundles of a few MiB, plus each bundle's
    FAISS index, which FAISS allocates in C++ where ``tracemalloc`` does not see it (its
    serialized size: the vectors and the structure over them)."""
    import tracemalloc

    import faiss

    from model.features import LiveSession
    from services.stack import mlflow_store
    from streams.registry import load_bundle

    os.environ.update({k: v for k, v in env.items() if k.startswith("STREAMREC_MLFLOW")})
    store = mlflow_store(load_settings())
    sessions: dict[str, list[str]] = {}
    for e in users:
        sessions.setdefault(e.user_id, []).append(e.item_id)
    bundles: list = []

    def held_by_one_more() -> float:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        bundle = load_bundle(store)
        for user, items in sessions.items():
            bundle.recommend([user], [LiveSession(items[-50:])], 10)
        bundles.append(bundle)
        gc.collect()
        index = faiss.serialize_index(bundle.index.index).nbytes
        return (tracemalloc.get_traced_memory()[0] - before + index) / 2**20

    load_bundle(store)  # the first load imports and warms the frameworks: not counted
    tracemalloc.start()
    first, second = held_by_one_more(), held_by_one_more()
    tracemalloc.stop()
    return {"first_bundle_mib": first, "extra_variant_mib": second, "ratio": second / first,
            "users_served": len(sessions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path("../shared/data/ml-latest-small/ratings.csv"))
    parser.add_argument("--format", dest="fmt", default="movielens")
    parser.add_argument("--events", type=int, default=20_000, help="replayed per mode")
    parser.add_argument("--epochs", type=int, default=2, help="champion training epochs")
    parser.add_argument("--modes", default="interleave,ab")
    args = parser.parse_args()

    settings = load_settings()
    build_stack(settings).up()
    train, live, shape = split_log(args)
    env = champion_env(settings, train, args.epochs, shape)
    folder = settings.data_dir / "bench" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    runs = [live_run(settings, env, live, mode, folder) for mode in args.modes.split(",")]
    mem = memory(env, live[:5000])
    print(f"\nlive experiments, champion vs recent popularity; {shape}, "
          f"{len(live):,} replayed events per mode, one worker")
    for r in runs:
        ndcg = {v["name"]: v["metrics"].get("NDCG@10", {}).get("mean") for v in r["variants"]}
        decided = (f"first look with a verdict at {r['lists_at_verdict']:>7,} lists"
                   if r["lists_at_verdict"] else "no verdict")
        print(f"{r['mode']:<11} winner {r['winner'] or '-':<11} {decided}   "
              f"NDCG@10 per variant {ndcg}"
              + (f"   credits {r['tests']['interleaving']['wins']}" if r["mode"] == "interleave"
                 else ""))
    won = all(r["winner"] == "champion" for r in runs)
    print(f"the champion (the better model by the offline protocol) won in every mode: "
          f"{'yes' if won else 'NO'}")
    print(f"memory: first bundle {mem['first_bundle_mib']:.0f} MiB, an extra variant "
          f"{mem['extra_variant_mib']:.0f} MiB: {mem['ratio']:.2f}x (target <= 1.2x)")
    RESULTS.write_bytes(orjson.dumps({"shape": shape, "runs": runs, "champion_won": won,
                                      "memory": mem},
                                     option=orjson.OPT_INDENT_2))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
