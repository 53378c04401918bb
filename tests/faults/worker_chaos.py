"""Fault injection on the workers (issue #16): kill -9 chaos and SIGSTOP past the session
timeout, two scenarios of `make faults`.

Two workers share one group on 4 partitions while events stream in; every few seconds one
of them is hit, in turn:

- ``--fault kill``: killed with SIGKILL and restarted at once;
- ``--fault stop``: frozen with SIGSTOP for ``--pause-s`` (past the session timeout, so
  the group hands its partitions to the other worker), then let go with SIGCONT. It wakes
  up a zombie, still holding events and a micro-batch for partitions it no longer owns,
  and must exit before it writes a session (``streams.freeze``); it is then restarted;
- ``--fault broker``: the embedded Kafka broker is killed with SIGKILL and started again
  ``--down-s`` later. The workers are left alone: they must ride out the outage and go on
  by themselves (a worker that exited counts against the run).

Modelled on Kafka's own system tests (kill processors, then check every record was
delivered) with a Jepsen-style history check at the end:

- lost: events never answered on the recommendations topic (must be 0);
- duplicated: answers beyond the first per event (at-least-once allows them), counted over
  the topic as it stands once every event was answered;
- drained in: seconds from the last fault until the last event was answered (the time
  the worker wrote that answer);
- exits: a worker that exited by itself (not by the fault's own signal, nor the freeze
  guard's code after a SIGSTOP) counts against the run, even when it was restarted;
- state: each user's final session in the changelog against one uninterrupted pass over
  the same events (must be equal);
- "Crashed" in any worker log (must not appear);
- without items after the first fault: answers whose list is empty, written after the
  first fault, reported only. A worker's popularity starts from the workers' stored
  records, so only the workers' first micro-batches, before any record, have nothing to
  give; a restarted one that found no record it could take (each counted the events it
  answers again) answered its first micro-batch empty.

The workers run without a champion (popularity answers), so the check is about delivery
and state, at a rate the model would not allow on a small machine.

    make faults                                   # both, with their defaults
    .venv/bin/python -m tests.faults.worker_chaos --events 100000 --rate 1500 --every 5 10
    .venv/bin/python -m tests.faults.worker_chaos --fault stop --events 45000 --rate 1000
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson

from infra.stack import Stack
from services.processes import ServiceProcess, isolated_run
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.consumer import read_to_end, read_topic
from streams.events import Event
from streams.freeze import EXIT_FROZEN
from streams.producer import EventProducer, sent_at_header
from streams.sessions import SessionPolicy, SessionState, apply_event, supersedes
from streams.synthetic import SyntheticConfig, generate

PARTITIONS = 4
T = TypeVar("T")
FAULT_NAMES = {"kill": "kill -9", "stop": "SIGSTOP", "broker": "broker bounce"}


def chaos_env(settings: Settings, home: Path, partitions: int = PARTITIONS) -> dict[str, str]:
    """Fresh topics, group and Redis channel (``isolated_run``: a demo's feed and
    popularity list are left alone); an empty registry (no champion) under ``home``. The
    sessions and the session timeout are pinned to what the checks assume: set in the
    shell, they made sessions "differ" that were right, or a SIGSTOP too short to matter."""
    policy = SessionPolicy()
    sized = settings.model_copy(update={"interactions_partitions": partitions})
    return {**os.environ, **isolated_run(sized, f"faults.{uuid.uuid4().hex[:8]}"),
            "STREAMREC_INTERACTIONS_PARTITIONS": str(partitions),
            "STREAMREC_WORKER_METRICS_PORT": "0", "STREAMREC_DATA_DIR": str(home),
            "STREAMREC_SESSION_GAP_MIN": str(policy.gap_ms / 60_000),
            "STREAMREC_SESSION_MAX_ITEMS": str(policy.max_items),
            "STREAMREC_CONTEXT_NUMERIC": "[]", "STREAMREC_CONTEXT_CATEGORICAL": "[]",
            "STREAMREC_WORKER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}


def drop_topics(settings: Settings, env: dict[str, str]) -> None:
    """Delete the run's topics, Faust's changelog and assignor topics included (all named
    after its group), so runs do not pile up on the broker for its week of retention."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.librdkafka())
    group = env["STREAMREC_WORKER_GROUP"]
    try:
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(group)]
        for done in admin.delete_topics(mine).values() if mine else ():
            done.result(timeout=30)
    except Exception as exc:  # noqa: BLE001 - never in place of the run's own failure
        print(f"warning: the run's topics ({group}.*) were not all deleted: {exc}", flush=True)


def send_at_rate(settings: Settings, env: dict[str, str], events: list[Event],
                 rate: float) -> None:
    """Every event, keyed by user, paced to ``rate`` events per second."""
    start = time.monotonic()
    with EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                       env["STREAMREC_TOPIC_DLQ"]) as producer:
        for i, event in enumerate(events):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            producer.send(event, headers=[sent_at_header()])


# Hits workers[i] in place; returns 1 when the worker had exited by itself, else 0.
Fault = Callable[[list[ServiceProcess], int], int]
SESSION_TIMEOUT_S = 10  # the workers' Kafka session timeout: --pause-s outlasts it


def restart(workers: list[ServiceProcess], victim: int, env: dict[str, str],
            logs: Path) -> None:
    workers[victim] = ServiceProcess.start(env, logs / f"worker{victim}.log", "worker",
                                           "--worker-id", str(victim))


def exited_by_itself(worker: ServiceProcess, expected: int) -> int:
    """1 when ``worker`` ended with another code than ``expected`` (the fault's own), and
    says so: a worker that exits on its own (code 70, a batch it could not publish) must
    not pass for one the fault took down."""
    code = worker.proc.wait()
    if code != expected:
        print(f"a worker exited by itself with code {code}; see {worker.log}", flush=True)
    return int(code != expected)


def sigkill(env: dict[str, str], logs: Path) -> Fault:
    """SIGKILL the worker and restart it at once."""
    def fault(workers: list[ServiceProcess], victim: int) -> int:
        workers[victim].proc.send_signal(signal.SIGKILL)
        exited = exited_by_itself(workers[victim], -signal.SIGKILL)
        restart(workers, victim, env, logs)
        return exited
    return fault


def sigstop(env: dict[str, str], logs: Path, pause_s: float) -> Fault:
    """Freeze the worker for ``pause_s``, then let it run on; restart it if it exits on
    waking (``streams.freeze``), as the compose file's restart policy would."""
    def fault(workers: list[ServiceProcess], victim: int) -> int:
        if workers[victim].proc.poll() is not None:  # gone before the freeze
            exited = exited_by_itself(workers[victim], -signal.SIGSTOP)
            restart(workers, victim, env, logs)
            return exited
        workers[victim].proc.send_signal(signal.SIGSTOP)
        time.sleep(pause_s)
        workers[victim].proc.send_signal(signal.SIGCONT)
        try:
            workers[victim].proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return 0
        exited = exited_by_itself(workers[victim], EXIT_FROZEN)
        restart(workers, victim, env, logs)
        return exited
    return fault


def broker_bounce(stack: Stack, down_s: float) -> Fault:
    """SIGKILL the embedded broker, and start it again ``down_s`` later."""
    def fault(workers: list[ServiceProcess], victim: int) -> int:
        pid = stack.local_kafka.running_pid() if stack.local_kafka else None
        if pid is None:
            sys.exit("error: this fault kills the embedded Kafka; STREAMREC_KAFKA_* name another")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(down_s)
        stack.up()  # returns once the broker answers
        print(f"broker killed, answering again {time.monotonic() - killed:.1f} s later",
              flush=True)
        return 0  # the workers are left alone: one that exited is counted at the end
    return fault


def fault_while(sending: threading.Thread, workers: list[ServiceProcess], fault: Fault,
                every: tuple[float, float], rng: random.Random
                ) -> tuple[int, float, float, int]:
    """Hit a worker, in turn, every ``every`` seconds (uniform) for as long as ``sending``
    runs. Returns the faults, the times the first began and the last ended (epoch seconds,
    to compare with record times) and the workers found to have exited by themselves."""
    faults, first, last, exits = 0, float("inf"), time.time(), 0
    while sending.is_alive():
        sending.join(rng.uniform(*every))
        if not sending.is_alive():
            break
        first = min(first, time.time())
        exits += fault(workers, faults % len(workers))
        faults, last = faults + 1, time.time()
    return faults, first, last, exits


def read_answers(settings: Settings, env: dict[str, str], expected: set[str],
                 wait_s: float) -> tuple[Counter[str], float, list[float]]:
    """Answers per event id: the topic is read until every expected event has one or none
    has come for ``wait_s`` (a killed worker's partitions wait out the session timeout),
    then counted again whole, so answers written after the last first one count as
    duplicates too. Also when the last expected event was first answered: its record's
    time (epoch seconds), which does not wait for this reader to start; and the record
    times of the answers that hold no item."""
    topic = env["STREAMREC_TOPIC_RECOMMENDATIONS"]
    first: dict[str, float] = {}
    for record in read_topic(settings.kafka, topic, from_beginning=True, idle_timeout_s=wait_s):
        event_id = orjson.loads(record.value)["event_id"]
        if event_id in expected:
            first.setdefault(event_id, record.timestamp_ms / 1000)
            if len(first) == len(expected):
                break
    answers: Counter[str] = Counter()
    empty: list[float] = []
    for record in read_to_end(settings.kafka, topic):
        answer = orjson.loads(record.value)
        answers[answer["event_id"]] += 1
        if not answer["items"]:
            empty.append(record.timestamp_ms / 1000)
    return answers, max(first.values(), default=time.time()), empty


def final_sessions(settings: Settings, env: dict[str, str]) -> tuple[dict[str, dict], int]:
    """Each user's session as a worker restoring the changelog would load it (in log
    order, stale records skipped: ``streams.sessions.supersedes``), and how many stale
    records the changelog held."""
    changelog = f"{env['STREAMREC_WORKER_GROUP']}-sessions-changelog"
    sessions: dict[str, dict] = {}
    stale = 0
    for r in read_topic(settings.kafka, changelog, from_beginning=True, idle_timeout_s=15):
        user, state = orjson.loads(r.key), orjson.loads(r.value)
        if supersedes(sessions.get(user), state):
            sessions[user] = state
        else:
            stale += 1
    return sessions, stale


def state_mismatches(events: list[Event], stored: dict[str, dict]) -> list[str]:
    """Users whose stored session differs from one uninterrupted pass over ``events``."""
    expected: dict[str, SessionState] = {}
    for e in events:
        expected[e.user_id] = apply_event(expected.get(e.user_id), e, SessionPolicy())[0]
    return [u for u, s in expected.items()
            if u not in stored or SessionState.from_dict(stored[u]) != s]


def run(settings: Settings, args: argparse.Namespace, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    events = list(generate(SyntheticConfig(users=args.users, items=2_000, events=args.events,
                                           seed=seed)))
    with tempfile.TemporaryDirectory(prefix="streamrec-faults-") as tmp:
        # A folder of its own, also in a kept --logs: logs are appended to, and an earlier
        # run's "Crashed" would count against this one.
        base = Path(args.logs or tmp)
        base.mkdir(parents=True, exist_ok=True)
        logs = Path(tempfile.mkdtemp(prefix=f"run{seed + 1}-{args.fault}-", dir=base))
        home = logs / "state"
        env = chaos_env(settings, home)
        # One at a time: two workers opening a registry that does not exist yet race to
        # create its tables (sqlite "table experiments already exists").
        workers = [ServiceProcess.start(env, logs / "worker0.log", "worker", "--worker-id", "0")]
        try:
            workers[0].wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
            workers.append(ServiceProcess.start(env, logs / "worker1.log", "worker",
                                                "--worker-id", "1"))
            workers[0].wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"], members=2)
            sending = threading.Thread(target=send_at_rate, args=(settings, env, events,
                                                                  args.rate), daemon=True)
            sending.start()
            faults, first_fault, last_fault, exits = fault_while(sending, workers,
                                                    pick_fault(args, env, logs), args.every, rng)
            answers, answered_at, empty = read_answers(
                settings, env, {e.event_id for e in events}, args.drain_s)
            stored, stale = final_sessions(settings, env)
            exited = exits + sum(1 for worker in workers if worker.proc.poll() is not None)
        finally:
            for worker in workers:
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait()
            drop_topics(settings, env)
        crashed = sum(log.read_text(errors="replace").count("Crashed")
                      for log in logs.glob("worker*.log"))
    return {"events": len(events), "faults": faults,
            "lost": sum(1 for e in events if e.event_id not in answers),
            "duplicated": sum(answers.values()) - len(answers),
            "drained_s": max(answered_at - last_fault, 0.0),
            "state_mismatches": len(state_mismatches(events, stored)), "stale": stale,
            "crashed": crashed, "exited": exited,
            "empty": sum(1 for at in empty if at >= first_fault)}


def pick_fault(args: argparse.Namespace, env: dict[str, str], logs: Path) -> Fault:
    if args.fault == "kill":
        return sigkill(env, logs)
    if args.fault == "stop":
        return sigstop(env, logs, args.pause_s)
    return broker_bounce(build_stack(load_settings()), args.down_s)


def run_with_logs(run: Callable[[Settings, argparse.Namespace, Path], T],
                  parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, T]:
    """The command line ``parser`` reads (plus ``--logs``), and ``run`` with it on the
    stack (brought up), its logs in ``--logs`` or a folder thrown away after."""
    parser.add_argument("--logs", help="keep the logs here (default: thrown away)")
    args = parser.parse_args()
    settings = load_settings()
    build_stack(settings).up()
    with tempfile.TemporaryDirectory(prefix="streamrec-faults-") as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        return args, run(settings, args, logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1_500, help="events per second")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--fault", choices=tuple(FAULT_NAMES), default="kill",
                        help="kill: SIGKILL and restart; stop: SIGSTOP, then SIGCONT; "
                             "broker: SIGKILL the broker, restart it --down-s later")
    parser.add_argument("--every", type=float, nargs=2, default=(5.0, 10.0),
                        metavar=("MIN_S", "MAX_S"), help="seconds between faults")
    parser.add_argument("--pause-s", type=float, default=15.0,
                        help="how long --fault stop freezes a worker (the session timeout "
                             "is 10 s)")
    parser.add_argument("--down-s", type=float, default=35.0,
                        help="how long --fault broker keeps the broker down")
    parser.add_argument("--drain-s", type=float, default=120.0,
                        help="seconds without an answer that end the run (beyond the "
                             "workers' session timeout)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--logs", help="keep the workers' logs here (default: thrown away)")
    args = parser.parse_args()
    settings = load_settings()
    build_stack(settings).up()
    failed = False
    for seed in range(args.runs):
        figures = run(settings, args, seed)
        print("{} chaos, run {}: {events:,} events, {faults} faults: lost {lost}, "
              "duplicated {duplicated}, all answered {drained_s:.1f} s after the last fault, "
              "{state_mismatches} sessions differ ({stale} stale changelog records skipped), "
              "{crashed} 'Crashed' in the logs, {exited} workers exited, {empty} answers "
              "without items after the first fault"
              .format(FAULT_NAMES[args.fault], seed + 1, **figures), flush=True)
        failed |= bool(figures["lost"] or figures["state_mismatches"] or figures["crashed"]
                       or figures["exited"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
