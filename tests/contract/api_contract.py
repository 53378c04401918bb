"""``make api-contract``: schemathesis, from its command line with every check on, against
the API running for real (the local stack and a pass-through worker), once with no key
configured and once with read keys, bearer tokens and event keys; exits 1 if either run
finds a failure. The command and its last result are in docs/RELIABILITY.md.

The stack is the one the ``STREAMREC_*`` environment names; unset, it is a stack of its
own (``DEFAULTS``: its own ports and data folder), started if down and stopped after, so
it never meets a developer's stack. The live feed is left out of the run: a stream that
never ends by design (its unit tests cover it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.processes import ServiceProcess
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.events import new_event

HERE = Path(__file__).resolve().parent
DEFAULTS = {"STREAMREC_DATA_DIR": "/tmp/apistack", "STREAMREC_KAFKA_PORT": "29092",
            "STREAMREC_KAFKA_CONTROLLER_PORT": "29093", "STREAMREC_REDIS_PORT": "26379",
            "STREAMREC_API_PORT": "28000", "STREAMREC_WORKER_METRICS_PORT": "0"}
KEY, TOKEN, SCOPED = "contract-key-0123456789", "contract-token-0123456789", "contract-shop-0123456789"
RUNS: dict[str, dict[str, str]] = {
    "no key": {},
    "keys": {"STREAMREC_API_KEY": KEY, "STREAMREC_API_READ_KEYS": f'["{KEY}"]',
             "STREAMREC_API_BEARER_TOKENS": f'["{TOKEN}"]',
             "STREAMREC_API_EVENT_KEYS": f'{{"{SCOPED}": "shop-a:"}}'},
}


def main() -> int:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    settings = load_settings()
    stack, started = build_stack(settings), set[str]()
    try:
        stack.up(started=started)
        failed = [name for name, keys in RUNS.items() if run(settings, name, keys) != 0]
    finally:  # also after an up that failed half-way: only what it started
        stack.down(only=started)
    print(f"api-contract: {'failures in ' + ', '.join(failed) if failed else 'no failure'}")
    return 1 if failed else 0


def run(settings: Settings, name: str, keys: dict[str, str]) -> int:
    """One schemathesis run against an API (and worker) started with ``keys``."""
    env = {**os.environ, **keys}
    folder = settings.data_dir / "api-contract"
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{settings.api_port}"
    headers = {"X-API-Key": KEY} if keys else {}
    worker = ServiceProcess.start(env, folder / "worker.log", "worker", "--pass-through")
    api = ServiceProcess.start(env, folder / "api.log", "api")
    try:
        worker.wait_joined(settings.kafka, settings.worker_group)
        api.wait_http(f"{url}/healthz")
        _make_ready(api, url, headers)
        print(f"\n=== schemathesis, {name} ===", flush=True)
        return subprocess.run(  # in the run's folder, where schemathesis keeps its cache
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
             str(HERE / "schemathesis.toml"), "run", f"{url}/openapi.json", "--checks", "all",
             "--exclude-path", "/v1/users/{user_id}/feed", "--request-timeout", "20",
             "--no-color", *(f"--header={k}: {v}" for k, v in headers.items())],
            env={**env, "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py")}, cwd=folder,
            check=False).returncode
    finally:
        api.stop()
        worker.stop()


def _make_ready(api: ServiceProcess, url: str, headers: dict[str, str]) -> None:
    """One event through the worker: the API then knows a model version, so ``/readyz``
    answers 200 as it does in service (a 503 there would be a true 5xx to report)."""
    event = new_event(f"contract-{time.time_ns()}", "i1", "click")
    reply = httpx.post(f"{url}/v1/events", content=event.to_json(), timeout=20,
                       headers={**headers, "Content-Type": "application/json"})
    reply.raise_for_status()
    api.wait_http(f"{url}/readyz")


if __name__ == "__main__":
    sys.exit(main())
