"""Fault injection: Redis killed and restarted under a worker (issue #16, `make faults`).

A pass-through worker answers one user, then Redis is killed with SIGKILL. During the
outage, events arrive for new users: their lists reach the topic, but Redis writes fail
and the worker's breaker opens wider with each failure. Redis is started again, and one more new
user sends an event at once, inside the breaker's window. Pass: every user's list is in
Redis within ``--wait-s``, those from the outage included, with no later event to carry
them. Before the fix, none of the 7 was.

    .venv/bin/python -m tests.faults.redis_restart
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from services.processes import ServiceProcess
from services.settings import load_settings
from services.stack import build_stack
from streams.events import new_event
from streams.producer import EventProducer, sent_at_header
from streams.recs_store import recs_key
from tests.faults.worker_chaos import chaos_env, drop_topics


def stored_within(client: redis.Redis, users: list[str], wait_s: float) -> set[str]:
    """The users whose list is in Redis by ``wait_s`` from now."""
    found: set[str] = set()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and len(found) < len(users):
        try:
            found |= {u for u in users if u not in found and client.exists(recs_key(u))}
        except redis.ConnectionError:
            pass
        time.sleep(0.5)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-users", type=int, default=6,
                        help="new users sending an event while Redis is down, 1.5 s apart")
    parser.add_argument("--wait-s", type=float, default=60.0)
    parser.add_argument("--logs", help="keep the worker's log here (default: thrown away)")
    args = parser.parse_args()
    settings = load_settings()
    stack = build_stack(settings)
    stack.up()
    if stack.local_redis is None:
        sys.exit("error: this scenario kills the embedded Redis; STREAMREC_REDIS_URL names another")
    run = uuid.uuid4().hex[:8]  # in user ids: Redis keeps lists across restarts (AOF)
    client = redis.Redis.from_url(settings.redis)
    with tempfile.TemporaryDirectory(prefix="streamrec-faults-") as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        env = chaos_env(settings, logs / "state", partitions=1)
        producer = EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                                 env["STREAMREC_TOPIC_DLQ"])

        def send(user: str) -> None:
            producer.send(new_event(user, "i1"), headers=[sent_at_header()])
            producer.flush()

        worker = ServiceProcess.start(env, logs / "worker.log", "worker", "--pass-through")
        try:
            worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
            send(f"{run}-before")
            before = stored_within(client, [f"{run}-before"], args.wait_s)
            redis_pid = stack.local_redis.running_pid()
            if redis_pid is None:
                sys.exit("error: the embedded Redis is not running")
            os.kill(redis_pid, signal.SIGKILL)
            outage = [f"{run}-outage-{i}" for i in range(args.outage_users)]
            for user in outage:
                time.sleep(1.5)
                send(user)
            stack.up()
            back = time.monotonic()
            send(f"{run}-after")
            after = stored_within(client, [f"{run}-after", *outage], args.wait_s)
            took = time.monotonic() - back
        finally:
            producer.close()
            worker.stop(30)
            drop_topics(settings, env)
    missing = sorted({f"{run}-after", *outage} - after)
    print(f"Redis restart: list before the outage stored {bool(before)}; after the restart "
          f"{len(after)} of {len(outage) + 1} new users' lists stored in {took:.1f} s; "
          f"missing {missing}", flush=True)
    sys.exit(1 if missing or not before else 0)


if __name__ == "__main__":
    main()
