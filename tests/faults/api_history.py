"""Fault injection: a Jepsen-style history check through the API (issue #16, `make faults`).

Client threads send each user's events, one at a time and in order, with
``POST /v1/events`` while two pass-through workers share 4 partitions and one of them is
killed with SIGKILL (and restarted) every ``--every`` seconds; live feeds are open for some
of the users throughout. The history is then checked:

- lost: events acknowledged with 202 and never answered on the recommendations topic;
- stale in Redis: users whose stored list is not the one for their newest event (the
  newest whose answer had items: an empty answer, a restarted worker's first micro-batch
  whose popularity knows nothing yet, is not stored over a list, ``streams.recs_store``);
- feeds back in time: a feed delivering the list of an older event of its user after one
  of a newer event.

    .venv/bin/python -m tests.faults.api_history [--users 200] [--events-per-user 40]
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import redis

from services.processes import ServiceProcess, free_port
from services.settings import Settings
from streams.consumer import read_to_end
from streams.events import new_event
from streams.recs_store import recs_key
from tests.faults.redis_outage import Feed
from tests.faults.worker_chaos import (
    chaos_env,
    drop_topics,
    fault_while,
    read_answers,
    run_with_logs,
    sigkill,
)


def send_history(url: str, users: list[str], per_user: int, rate: float,
                 acked: dict[str, list[str]]) -> None:
    """Each user's events in order, users taken in turn, paced to ``rate`` requests a
    second; ``acked[user]`` gets the ids the API acknowledged (202), in order."""
    start = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for i in range(per_user * len(users)):
            user = users[i % len(users)]
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            event = new_event(user, f"i{random.randrange(500)}")
            reply = client.post(f"{url}/v1/events", content=event.to_json(),
                                headers={"Content-Type": "application/json"})
            if reply.status_code == 202:
                acked[user].append(event.event_id)


def answered_with_items(settings: Settings, env: dict[str, str]) -> set[str]:
    """The events at least one of whose answers on the topic held items."""
    return {answer["event_id"] for r in read_to_end(settings.kafka,
                                                     env["STREAMREC_TOPIC_RECOMMENDATIONS"])
            if (answer := orjson.loads(r.value))["items"]}


def to_store(ids: list[str], with_items: set[str]) -> str:
    """The event whose list Redis should hold for a user who sent ``ids``: the newest one
    answered with items, or the newest when none was."""
    return next((event_id for event_id in reversed(ids) if event_id in with_items), ids[-1])


def stale_in_redis(settings: Settings, acked: dict[str, list[str]], with_items: set[str],
                   wait_s: float) -> list[str]:
    """Users whose stored list is not for the event it should be (``to_store``), after up
    to ``wait_s`` for the last writes."""
    client = redis.Redis.from_url(settings.redis)
    deadline = time.monotonic() + wait_s
    while True:
        stale = []
        for user, ids in acked.items():
            raw = client.get(recs_key(user))
            if ids and (raw is None
                        or orjson.loads(raw).get("event_id") != to_store(ids, with_items)):
                stale.append(user)
        if not stale or time.monotonic() > deadline:
            for user in stale[:5]:  # what a failure needs to be read
                ids, raw = acked[user], client.get(recs_key(user))
                held = orjson.loads(raw).get("event_id") if raw else None
                print(f"  stale: {user} holds the answer to event "
                      f"{ids.index(held) + 1 if held in ids else held} of {len(ids)}, "
                      f"should hold {ids.index(to_store(ids, with_items)) + 1}", flush=True)
            return stale
        time.sleep(1)


def back_in_time(feed: Feed, order: list[str]) -> int:
    """How often ``feed`` delivered the list of an older event after a newer one's."""
    rank = {event_id: i for i, event_id in enumerate(order)}
    newest, regressions = -1, 0
    for delivered in feed.lists:
        at = rank.get(delivered.get("event_id"), -1)
        if 0 <= at < newest:
            regressions += 1
        newest = max(newest, at)
    return regressions


def run(settings: Settings, args: argparse.Namespace, logs: Path) -> dict[str, int | float]:
    api_port = free_port()
    env = {**chaos_env(settings, logs / "state"), "STREAMREC_API_PORT": str(api_port)}
    env.pop("STREAMREC_API_KEY", None)  # this harness posts without one
    url, run_id = f"http://127.0.0.1:{api_port}", uuid.uuid4().hex[:8]
    users = [f"{run_id}-u{i}" for i in range(args.users)]
    acked: dict[str, list[str]] = {user: [] for user in users}
    # No champion: popularity answers, as in the kill -9 chaos (the check is delivery).
    workers = [ServiceProcess.start(env, logs / "worker0.log", "worker", "--worker-id", "0")]
    api = ServiceProcess.start(env, logs / "api.log", "api")
    try:
        workers[0].wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        workers.append(ServiceProcess.start(env, logs / "worker1.log", "worker",
                                                "--worker-id", "1"))
        workers[0].wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"], members=2)
        api.wait_http(f"{url}/healthz")
        feeds = {user: Feed(f"{url}/v1/users/{user}/feed") for user in users[:args.feeds]}
        sending = threading.Thread(target=send_history,
                                   args=(url, users, args.events_per_user, args.rate, acked))
        sending.start()
        faults, _, _, exits = fault_while(sending, workers, sigkill(env, logs),
                                       tuple(args.every), random.Random(7))
        expected = {event_id for ids in acked.values() for event_id in ids}
        answers, _, _ = read_answers(settings, env, expected, args.drain_s)
        with_items = answered_with_items(settings, env)
        stale = stale_in_redis(settings, acked, with_items, args.drain_s / 4)
        kept = sum(1 for ids in acked.values() if ids and ids[-1] not in with_items)
        time.sleep(1)  # the feeds' last lists
        regressions = sum(back_in_time(feed, acked[user]) for user, feed in feeds.items())
        exits += sum(1 for worker in workers if worker.proc.poll() is not None)
    finally:
        for worker in workers:
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
        api.stop()
        drop_topics(settings, env)
    return {"acked": len(expected), "faults": faults, "exits": exits,
            "lost": sum(1 for e in expected if e not in answers),
            "duplicated": sum(answers.values()) - len(answers),
            "stale": len(stale), "kept": kept, "regressions": regressions,
            "feed_lists": sum(len(f.lists) for f in feeds.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events-per-user", type=int, default=40)
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--feeds", type=int, default=200,
                        help="users with a live feed open (the first ones)")
    parser.add_argument("--every", type=float, nargs=2, default=(10.0, 15.0),
                        metavar=("MIN_S", "MAX_S"), help="seconds between worker kills")
    parser.add_argument("--drain-s", type=float, default=120.0)
    args, f = run_with_logs(run, parser)
    print(f"API history: {f['acked']:,} events acknowledged, {f['faults']} worker kills: "
          f"lost {f['lost']}, duplicated {f['duplicated']}, users whose Redis list is not their newest event's "
          f"{f['stale']} ({f['kept']} kept their list over an empty answer to their newest), "
          f"feeds back in time {f['regressions']} (of {f['feed_lists']} "
          f"lists delivered), {f['exits']} workers exited by themselves", flush=True)
    if not f["acked"]:  # an API key set in the shell, say: the run would check nothing
        print("error: the API acknowledged no event; see api.log (--logs DIR keeps it)")
    sys.exit(1 if f["lost"] or f["stale"] or f["regressions"] or f["exits"]
             or not f["acked"] else 0)


if __name__ == "__main__":
    main()
