"""Fault injection: poisoned champions announced to a running worker (issue #16,
`make faults`).

A worker serves a champion trained here (a small synthetic log) while events stream in at
``--rate``. The champion alias is then moved, and the move announced, to each poisoned
pair in turn, then back to the good one:

- a ranker whose artifact cannot be loaded (a registry version pointing at nothing);
- a ranker whose weights are all NaN (it loads, and scores NaN);
- a ranker trained on another log (its users and items are not the retriever's).

Pass: every event answered; every list served by the good champion, or by popularity,
never by a poisoned pair; no score that is not a finite number; each poisoned pair
refused (``swaps_failed`` in the worker's status); the worker never exits; and after the
alias is moved back, no further swap is needed (the good pair is still served).

    .venv/bin/python -m tests.faults.poison_models [--rate 50] [--hold-s 15]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from services.processes import CLI, ServiceProcess
from services.settings import Settings, load_settings
from services.stack import mlflow_store
from streams.consumer import read_topic
from streams.events import Event
from streams.hot_swap import announce
from streams.messages import version_string
from streams.producer import EventProducer, sent_at_header
from streams.registry import (
    RANKER_NAME,
    RETRIEVER_NAME,
    example_inputs,
    load_model,
    log_run,
    set_champion,
)
from streams.status import WorkerStatus
from streams.synthetic import SyntheticConfig, generate
from tests.faults.worker_chaos import chaos_env, drop_topics, run_with_logs


def train(env: dict[str, str], events: list[Event], folder: Path, champion: bool) -> None:
    """``streamrec train`` on ``events`` (a champion, or registered only)."""
    data = folder / f"train-{len(events)}-{champion}.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in events))
    done = subprocess.run([*CLI, "train", "--data", str(data), "--format", "jsonl",
                           "--model", "all", "--epochs", "2",
                           *(["--champion"] if champion else [])],
                          capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"training failed: {done.stderr[-2000:]}")


def poisoned_versions(settings: Settings, env: dict[str, str], folder: Path
                      ) -> dict[str, str]:
    """Register the three poisoned rankers; {what: ranker version}."""

    store = mlflow_store(settings)
    client = store.client()
    missing = client.create_model_version(RANKER_NAME, source=str(folder / "nothing-here"))
    ranker = load_model(store, RANKER_NAME, version="1")
    ranker.set_weights([np.full_like(w, np.nan) for w in ranker.get_weights()])
    nan = log_run(store, "poison", "nan-ranker", params={}, curve=[], metrics={},
                  models={RANKER_NAME: (ranker, example_inputs("pipeline", ranker, {}))})
    before = {v.version for v in client.search_model_versions(f"name='{RANKER_NAME}'")}
    other = list(generate(SyntheticConfig(users=30, items=200, events=1500, seed=99)))
    train(env, other, folder, champion=False)
    after = {v.version for v in client.search_model_versions(f"name='{RANKER_NAME}'")}
    return {"unloadable": str(missing.version), "NaN scores": nan[RANKER_NAME],
            "another log's ranker": max(after - before, key=int)}


def send_steadily(settings: Settings, env: dict[str, str], events: list[Event],
                  rate: float, stop: threading.Event) -> int:
    """Send ``events`` in a loop at ``rate`` until ``stop``; returns how many were sent."""
    sent = 0
    with EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                       env["STREAMREC_TOPIC_DLQ"]) as producer:
        while not stop.is_set():
            event = events[sent % len(events)]
            producer.send(Event(f"{event.event_id[:24]}{sent:012d}", event.user_id,
                                event.item_id, event.event_type, int(time.time() * 1000)),
                          headers=[sent_at_header()])
            sent += 1
            stop.wait(1 / rate)
    return sent


def bad_scores(value: dict) -> bool:
    return any(not isinstance(i["score"], (int, float)) or not math.isfinite(i["score"])
               for i in value["items"])


def run(settings: Settings, args: argparse.Namespace, logs: Path) -> dict[str, object]:
    env = chaos_env(settings, logs / "state", partitions=2)
    os.environ.update({k: v for k, v in env.items() if k.startswith("STREAMREC_")})
    settings = load_settings()  # this run's registry and topics
    events = list(generate(SyntheticConfig(users=80, items=60, events=3000, seed=11)))
    train(env, events[:2500], logs, champion=True)
    good = version_string({RETRIEVER_NAME: "1", RANKER_NAME: "1"})
    poisons = poisoned_versions(settings, env, logs)
    worker = ServiceProcess.start(env, logs / "worker.log", "worker", status=True)
    stop, sent = threading.Event(), [0]
    sender = threading.Thread(target=lambda: sent.__setitem__(0, send_steadily(
        settings, env, events[2500:], args.rate, stop)))
    refused: dict[str, int] = {}
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        sender.start()
        status: Callable[[], WorkerStatus] = lambda: worker.current_status(WorkerStatus)  # noqa: E731
        for what, version in [*poisons.items(), ("the good champion again", "1")]:
            failed_before = status().swaps_failed
            versions = {RETRIEVER_NAME: "1", RANKER_NAME: version}
            set_champion(mlflow_store(settings), versions)
            announce(settings.kafka, settings.topic_model_updates, versions,
                     mlflow_store(settings).tracking_uri)
            time.sleep(args.hold_s)
            refused[what] = status().swaps_failed - failed_before
        stop.set()
        sender.join()
        final = status()
        # read with the worker still up: stopped at once, the events of the last tens of
        # milliseconds could go unanswered (uncommitted, for the next worker), one run did
        values = [orjson.loads(r.value) for r in read_topic(
            settings.kafka, env["STREAMREC_TOPIC_RECOMMENDATIONS"], from_beginning=True,
            limit=sent[0], idle_timeout_s=30)]
    finally:
        stop.set()
        output = worker.stop()
        drop_topics(settings, env)
    return {"sent": sent[0], "answered": len({v["event_id"] for v in values}),
            "versions": sorted({v["model_version"] for v in values}),
            "bad_scores": sum(bad_scores(v) for v in values), "refused": refused,
            "served": final.model_version, "good": good,
            "exited": worker.proc.returncode not in (0, -15, None) or "Crashed" in output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--hold-s", type=float, default=15.0,
                        help="how long each poisoned champion stays announced")
    args, f = run_with_logs(run, parser)
    print(f"poisoned models: {f['sent']:,} events sent, {f['answered']:,} answered; served "
          f"{f['versions']}; {f['bad_scores']} lists with a non-finite score; refused "
          f"swaps {f['refused']}; serving {f['served']} at the end; crashed or exited "
          f"{f['exited']}", flush=True)
    ok = (0 < f["answered"] == f["sent"] and f["bad_scores"] == 0 and not f["exited"]
          and set(f["versions"]) <= {f["good"], "none"} and f["served"] == f["good"]
          and all(n > 0 for what, n in f["refused"].items() if "good" not in what))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
