"""Experiments on the API, as a process against the real broker, Redis and registry: the
routes follow the rules ``streamrec experiment`` follows (``streams.experiment_control``),
on an experiments topic of the module's own, so no other test or stack sees its
declarations. No trained model is needed: variants served by popularity pass the
registry check, and a version the registry lacks is refused like any unknown model."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.topics import delete_topics, ensure_topics
from model.experiments.online import list_outcome
from services.processes import ServiceProcess, free_port, isolated_run
from services.settings import Settings
from streams.experiment_control import new_experiment
from streams.experiment_store import write_tallies
from streams.experiments import Tallies

API_KEY = "test-key-0123456789"
MISSING = "streamrec-retriever:v999999+streamrec-ranker:v999999"  # no registry has these


@dataclass
class Api:
    url: str
    topic: str  # its experiments topic

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=20)

    def post(self, path: str, body: object = None, key: str | None = API_KEY) -> httpx.Response:
        """``body`` as JSON (bytes as they are; None: no body)."""
        content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        return httpx.post(f"{self.url}{path}", content=content, timeout=20,
                          headers={"X-API-Key": key} if key else {})

    def declared(self) -> dict:
        reply = self.get("/v1/experiments")
        assert reply.status_code == 200, reply.text
        return reply.json()


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API on per-run topics, with a compacted experiments topic of its own."""
    tmp = tmp_path_factory.mktemp("api-experiments")
    run = f"test-exp-{uuid.uuid4().hex[:8]}"
    topic = f"{run}.experiments"
    ensure_topics(settings.kafka, [spec for spec in settings.model_copy(
        update={"topic_experiments": topic}).topics() if spec.name == topic])
    port = free_port()
    env = {**os.environ, **isolated_run(settings, run), "STREAMREC_TOPIC_EXPERIMENTS": topic,
           "STREAMREC_API_PORT": str(port), "STREAMREC_API_KEY": API_KEY}
    process = ServiceProcess.start(env, tmp / "api.log", "api")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/healthz")
        yield Api(url, topic)
    finally:
        process.stop()
        delete_topics(settings.kafka, [topic])


@pytest.fixture
def name(api: Api) -> Iterator[str]:
    """A fresh experiment name; whatever still runs at the end is stopped, since at most
    one experiment runs at a time and the next test starts its own."""
    yield f"exp-{uuid.uuid4().hex[:8]}"
    live = api.declared()["running"]
    if live is not None:
        assert api.post(f"/v1/experiments/{live}/stop").status_code == 200


def _start(name: str, *variants: tuple[str, str, float], **extra: object) -> dict:
    return {"name": name, "variants": [{"name": n, "model": m, "share": s}
                                       for n, m, s in variants], **extra}


def _strict(text: str) -> object:
    """``text`` parsed as strict JSON: NaN and Infinity, which Python's parser would take,
    are refused."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the answer: {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def test_a_refused_start_says_why_in_one_line_and_declares_nothing(api: Api, name: str) -> None:
    pair = [("control", "popularity", 0.5), ("treatment", "popularity", 0.5)]
    refused = {
        "the shares and the holdback add up to 0.6, not 1":
            _start(name, ("control", "popularity", 0.3), ("treatment", "popularity", 0.3)),
        "variant treatment: no models under the versions":
            _start(name, ("control", "popularity", 0.5), ("treatment", MISSING, 0.5)),
        "variants: List should have at least 2 items": _start(name, ("only", "popularity", 1.0)),
        "variant names repeat: a, a": _start(name, ("a", "popularity", 0.5),
                                             ("a", "popularity", 0.5)),
        "mode: Input should be 'ab' or 'interleave'": _start(name, *pair, mode="split"),
        "variants.0.share: Input should be greater than 0":
            _start(name, ("control", "popularity", -0.5), ("treatment", "popularity", 1.5)),
        "name: Field required": {"variants": []},
    }
    for why, body in refused.items():
        reply = api.post("/v1/experiments", body)
        assert reply.status_code == 400, (why, reply.text)
        detail = reply.json()["detail"]
        assert detail.startswith(why) and "\n" not in detail, (why, detail)
    assert api.post("/v1/experiments", b"not json").status_code == 400
    assert api.post("/v1/experiments", _start(name, *pair), key=None).status_code == 401
    assert api.declared() == {"experiments": [], "running": None}


def test_start_status_and_stop(api: Api, name: str, settings: Settings) -> None:
    started = api.post("/v1/experiments", _start(
        name, ("control", "popularity", 0.45), ("treatment", "popularity", 0.45),
        holdback=0.1))
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["versions"] == {"control": "popularity", "treatment": "popularity"}
    assert body["experiment"]["salt"] == name and body["experiment"]["state"] == "running"
    declared = api.declared()
    assert declared["running"] == name
    assert [e["name"] for e in declared["experiments"]] == [name]

    another = api.post("/v1/experiments", _start(
        f"{name}-b", ("control", "popularity", 0.5), ("treatment", "popularity", 0.5)))
    assert another.status_code == 409
    assert another.json() == {"detail": f"experiment {name!r} is running: stop it first"}

    _tally(settings, name)
    reply = api.get(f"/v1/experiments/{name}")
    assert reply.status_code == 200, reply.text
    status = _strict(reply.text)
    assert isinstance(status, dict)
    figures = {v["name"]: v for v in status["variants"]}
    assert (figures["control"]["users"], figures["treatment"]["users"]) == (1, 3)
    assert figures["treatment"]["lists"] == 3 and figures["treatment"]["model"] == "popularity"
    ndcg = figures["control"]["metrics"]["NDCG@10"]
    assert ndcg["mean"] == 1.0 and ndcg["low"] is None  # one user: no interval, null not NaN
    assert figures["treatment"]["metrics"]["HR@10"]["low"] is not None
    assert "treatment vs control: NDCG@10" in status["tests"]
    assert status["workers"] == 1 and status["verdict"] and status["winner"] is None
    assert isinstance(status["sample_ratio_mismatch"], bool)

    early = api.post(f"/v1/experiments/{name}/conclude")
    assert early.status_code == 409 and "has no verdict yet" in early.json()["detail"]

    stopped = api.post(f"/v1/experiments/{name}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped" and stopped.json()["stopped_us"]
    declared = api.declared()
    assert declared["running"] is None and declared["experiments"][0]["state"] == "stopped"
    assert api.get(f"/v1/experiments/{name}").status_code == 200  # figures stay readable
    again = api.post("/v1/experiments", _start(
        name, ("control", "popularity", 0.5), ("treatment", "popularity", 0.5)))
    assert again.status_code == 409 and "exists already" in again.json()["detail"]


def test_a_start_waits_for_one_under_way_elsewhere_then_finds_it_running(
        api: Api, name: str, settings: Settings) -> None:
    """Two starts in two processes (API replicas, the CLI, a trainer) both passed "none
    running" when the second declared after the first had read back: both said started.
    Here the test is the other process, holding the lock while it declares."""
    import redis

    from streams.experiment_control import declaration_lock
    from streams.experiment_store import declare

    pair = [("control", "popularity", 0.5), ("treatment", "popularity", 0.5)]
    client = redis.Redis.from_url(settings.redis)
    lock = client.lock(declaration_lock(api.topic), timeout=60)
    assert lock.acquire(blocking=False)
    replies: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: replies.append(
        api.post("/v1/experiments", _start(f"{name}-b", *pair))))
    waiting.start()
    try:
        waiting.join(2)
        assert waiting.is_alive() and not replies  # the API's start waits on the lock
        declare(settings.kafka, api.topic, new_experiment(name, pair))
    finally:
        lock.release()
    waiting.join(30)
    assert replies[0].status_code == 409, replies[0].text
    assert replies[0].json() == {"detail": f"experiment {name!r} is running: stop it first"}
    assert api.declared()["running"] == name


def test_conclude_names_the_winner_and_a_popularity_winner_promotes_nothing(
        api: Api, name: str) -> None:
    assert api.post("/v1/experiments", _start(
        name, ("control", "popularity", 0.5), ("treatment", "popularity", 0.5),
        mode="interleave")).status_code == 201
    wrong = api.post(f"/v1/experiments/{name}/conclude", {"winner": "nobody"})
    assert wrong.status_code == 400 and "is not a variant" in wrong.json()["detail"]
    assert api.post(f"/v1/experiments/{name}/conclude", {"winner": 3}).status_code == 400
    assert api.post(f"/v1/experiments/{name}/conclude", {"winner": "treatment"},
                    key=None).status_code == 401
    done = api.post(f"/v1/experiments/{name}/conclude", {"winner": "treatment",
                                                          "promote": True})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["experiment"]["winner"] == "treatment"
    assert body["experiment"]["state"] == "stopped"
    assert (body["promoted"], body["announced"]) == ({}, None)
    status = _strict(api.get(f"/v1/experiments/{name}").text)
    assert isinstance(status, dict) and "interleaving" in status["tests"]
    assert status["sample_ratio_p"] is None  # no split to check when everyone sees both


def test_an_unknown_experiment_is_404_and_a_malformed_name_422(api: Api) -> None:
    for reply in (api.get("/v1/experiments/no-such-one"),
                  api.post("/v1/experiments/no-such-one/stop"),
                  api.post("/v1/experiments/no-such-one/conclude", {"winner": "a"})):
        assert reply.status_code == 404, reply.text
        assert reply.json()["detail"].startswith("no experiment named 'no-such-one'")
    assert api.get("/v1/experiments/Not%20A%20Name").status_code == 422


def _tally(settings: Settings, name: str) -> None:
    """What one worker would have written for ``name``: a control user whose next item
    was first in their list, three treatment users (one hit, two misses)."""
    import redis.asyncio as aioredis

    tallies = Tallies()
    tallies.variant("control").add("u0", list_outcome(["i1", "i2"], "i1").as_dict())
    for user, item in (("u1", "i1"), ("u2", "i9"), ("u3", "i8")):
        tallies.variant("treatment").add(user, list_outcome(["i1", "i2"], item).as_dict())

    async def write() -> None:
        client = aioredis.Redis.from_url(settings.redis)
        try:
            await write_tallies(client, name, "test-worker", tallies)
        finally:
            await client.aclose()

    asyncio.run(write())


def test_the_dashboard_panel_shows_the_running_experiment_then_the_latest(
        api: Api, name: str, settings: Settings, tmp_path: Path) -> None:
    """In headless Chromium: the panel shows the running experiment's variants with their
    figures and intervals, the verdict and the sample-ratio check; once it is stopped, the
    panel keeps showing it as the latest, stopped."""
    from browser import Browser

    assert api.post("/v1/experiments", _start(
        name, ("control", "popularity", 0.5), ("treatment", "popularity", 0.5))).status_code == 201
    _tally(settings, name)
    browser = Browser(f"{api.url}/", tmp_path / "chromium")
    try:
        browser.wait_for(f"document.getElementById('experiment-name').textContent"
                         f".startsWith({json.dumps(name + ' · ab · running')})")
        panel = browser.text("experiment")
        assert "treatment" in panel and "popularity" in panel
        assert "1.0000 [–, –]" in panel  # the control's lone user: a mean, no interval
        assert "verdict" in panel and "sample ratio" in panel
        assert api.post(f"/v1/experiments/{name}/stop").status_code == 200
        browser.wait_for("document.getElementById('experiment-name').textContent"
                         ".includes('stopped')", timeout_s=15)
    finally:
        browser.close()

