"""Who may call the API, and its bounds, without Kafka or Redis: read keys and bearer
tokens, event keys and their scopes, the OpenAPI security schemes as configured, the
request deadline and the cap on live feeds."""

from __future__ import annotations

import asyncio
import json
import re

import orjson
import pytest
from api_fakes import InProcessApi

from infra.errors import StackError
from services.api.feed import FeedHub, FeedsFull
from services.api.timeouts import RequestTimeout
from services.settings import load_settings
from streams.events import new_event

READ_KEY, TOKEN = "read-key-0123456789", "read-token-0123456789"
KEY, SCOPED = "event-key-0123456789", "shop-a-key-0123456789"
READS = ["/v1/users/u1/recommendations", "/v1/users/u1/recommendations?k=2",  # fast path
         "/v1/users/u1/recommendations?k=2&x=1", "/v1/live", "/metrics"]      # FastAPI


def _events(*users: str) -> bytes:
    return orjson.dumps([orjson.loads(new_event(u, "i1").to_json()) for u in users])


def _operations(doc: dict) -> dict[str, dict]:
    return {f"{m.upper()} {p}": op for p, ops in doc["paths"].items() for m, op in ops.items()}


def test_without_keys_every_route_is_open_and_no_security_is_declared() -> None:
    api = InProcessApi()
    for path in READS:
        assert api.get(path).status_code == 200, path
    assert api.call("POST", "/v1/events", content=_events("u1")).status_code == 202
    doc = api.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
    for name, op in _operations(doc).items():
        assert "security" not in op and "401" not in op["responses"], name
        assert not [p for p in op.get("parameters", []) if p["in"] == "header"
                    and p["name"].lower() == "x-api-key"], name
    assert "No key is configured" in doc["info"]["description"]


def test_reads_need_a_read_key_or_a_bearer_token_when_configured() -> None:
    api = InProcessApi(api_read_keys=[READ_KEY], api_bearer_tokens=[TOKEN])
    for path in READS:
        for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}, {"X-API-Key": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
            refused = api.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.json() == {"detail": "missing or wrong X-API-Key or bearer token"}
            assert refused.headers["www-authenticate"] == "Bearer"
        assert api.get(path, headers={"X-API-Key": READ_KEY}).status_code == 200, path
        assert api.get(path, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert api.get("/v1/users/u1/feed").status_code == 401  # refused before it streams
    keys_only = InProcessApi(api_read_keys=[READ_KEY]).get(READS[0])
    assert keys_only.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    assert api.get("/healthz").status_code == 200  # liveness stays open for probes
    assert api.call("POST", "/v1/events", content=_events("u1")).status_code == 202


def test_read_keys_without_an_event_key_warn_that_writes_stay_open(
        caplog: pytest.LogCaptureFixture) -> None:
    """Documented, but easy to miss: with read keys alone, anyone may post events, write
    the catalogue and conclude an experiment with ``promote``."""
    InProcessApi(api_read_keys=[READ_KEY])
    assert "read keys are set but no event key" in caplog.text
    caplog.clear()
    InProcessApi(api_read_keys=[READ_KEY], api_key=KEY)
    InProcessApi()
    assert "no event key" not in caplog.text


def test_event_keys_post_only_for_the_users_in_their_scope() -> None:
    api = InProcessApi(api_key=KEY, api_event_keys={SCOPED: "shop-a:"})

    def post(key: str | None, *users: str) -> tuple[int, dict]:
        reply = api.call("POST", "/v1/events", content=_events(*users),
                         headers={"X-API-Key": key} if key else {})
        return reply.status_code, reply.json()

    assert post(None, "u1") == (401, {"detail": "missing or wrong X-API-Key"})
    assert post(READ_KEY, "u1")[0] == 401
    challenge = api.call("POST", "/v1/events", content=_events("u1")).headers
    assert challenge["www-authenticate"] == 'ApiKey header="X-API-Key"'  # RFC 9110: always one
    assert post(KEY, "u1", "shop-a:u2")[0] == 202  # the unscoped key: every user
    assert post(SCOPED, "shop-a:u3")[0] == 202
    status, body = post(SCOPED, "shop-a:u4", "u5")
    assert (status, body) == (403, {"detail": "this key may post events only for users "
                                    "whose id starts with 'shop-a:'; event 1 is for 'u5'"})
    assert [e.user_id for e in api.ingest.sent] == ["u1", "shop-a:u2", "shop-a:u3"]
    assert api.get("/v1/users/u1/recommendations").status_code == 200  # reads stay open


@pytest.mark.parametrize(("settings", "schemes"), [
    ({"api_read_keys": [READ_KEY]}, {"readKey"}),
    ({"api_bearer_tokens": [TOKEN]}, {"readToken"}),
    ({"api_key": KEY}, {"eventKey"}),
    ({"api_read_keys": [READ_KEY], "api_bearer_tokens": [TOKEN], "api_key": KEY,
      "api_event_keys": {SCOPED: "shop-a:"}}, {"readKey", "readToken", "eventKey"}),
])
def test_the_openapi_document_declares_exactly_the_configured_schemes(
        settings: dict, schemes: set[str]) -> None:
    doc = InProcessApi(**settings).get("/openapi.json").json()
    declared = doc["components"]["securitySchemes"]
    assert set(declared) == schemes
    expected = {"readKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "readToken": {"type": "http", "scheme": "bearer"},
                "eventKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for name, scheme in declared.items():
        assert expected[name].items() <= scheme.items(), name
    reads = [{s: []} for s in ("readKey", "readToken") if s in schemes]
    events = [{"eventKey": []}] if "eventKey" in schemes else []
    ops = _operations(doc)
    for name, op in ops.items():
        wanted = {"POST /v1/events": events, "PUT /v1/items/{item_id}": events,
                  "POST /v1/items": events, "POST /v1/experiments": events,
                  "POST /v1/experiments/{name}/stop": events,
                  "POST /v1/experiments/{name}/conclude": events,
                  "GET /healthz": [], "GET /readyz": []}.get(name, reads)
        assert op.get("security", []) == wanted, name
        assert ("401" in op["responses"]) == bool(wanted), name
    assert ("403" in ops["POST /v1/events"]["responses"]) == ("api_event_keys" in settings)
    text = json.dumps(doc)
    assert not any(secret in text for secret in (READ_KEY, TOKEN, KEY, SCOPED))


def test_the_description_gives_the_rules_not_the_keys_scopes() -> None:
    """The OpenAPI document is always open: listing each key's scope told anyone how many
    keys there are and each tenant's user-id prefix (a review)."""
    doc = InProcessApi(api_key=KEY, api_event_keys={SCOPED: "shop-a:"},
                       api_bearer_tokens=[TOKEN]).get("/openapi.json").json()
    description = doc["info"]["description"]
    assert "need a bearer token" in description
    assert "may be scoped to users whose id starts with a prefix" in description
    assert "shop-a:" not in json.dumps(doc) and "key 2" not in description


def test_weak_keys_are_refused_at_start_without_echoing_them() -> None:
    for field in ("api_key", "api_read_keys", "api_bearer_tokens", "api_event_keys"):
        value = {"": "shop-a:"} if field == "api_event_keys" else (
            ["has space 0123456789"] if field.endswith("s") else "short")
        with pytest.raises(StackError, match=re.escape(field.upper())) as refused:
            load_settings(**{field: value})
        assert "short" not in str(refused.value) and "has space" not in str(refused.value)


def test_a_feed_over_the_cap_gets_503_and_closing_one_makes_room() -> None:
    api = InProcessApi(api_max_feeds=2)
    held = [api.hub.open("u1"), api.hub.open("u2")]
    refused = api.get("/v1/users/u3/feed")
    assert refused.status_code == 503
    assert refused.json() == {"detail": "2 live feeds are open, the limit; retry later"}
    assert refused.headers["retry-after"] == "5"
    api.hub.close("u1", held[0])
    api.hub.close("u1", held[0])  # twice: counted once
    assert api.hub.clients == 1
    api.hub.open("u3")
    with pytest.raises(FeedsFull):
        api.hub.open("u4")


def test_the_hub_counts_its_feeds() -> None:
    hub = FeedHub(None, "ch", None, None, max_feeds=3)  # type: ignore[arg-type]
    a, b = hub.open("u1"), hub.open("u1")
    assert hub.clients == 2 and len(hub.feeds["u1"]) == 2
    hub.close("u1", a)
    hub.close("u1", b)
    assert hub.clients == 0 and not hub.feeds


def test_a_slow_request_gets_504_with_one_line() -> None:
    api = InProcessApi(redis_delay_s=0.5, api_request_timeout_s=0.05)
    for path in ("/v1/users/u1/recommendations", "/v1/users/u1/recommendations?k=2&x=1"):
        late = api.get(path)
        assert late.status_code == 504, path
        assert late.json() == {"detail": "no answer within 0.05 s"}
    metrics = api.get("/metrics").text  # the metrics wrap the deadline: 504s are counted
    assert 'route="/v1/users/{user_id}/recommendations",status="504"' in metrics


def test_the_deadline_leaves_streams_and_other_timeouts_alone() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def slow(scope: dict, receive: object, send_: object) -> None:
        await asyncio.sleep(0.05)
        await send_({"type": "http.response.start", "status": 200})  # type: ignore[operator]

    async def failing(scope: dict, receive: object, send_: object) -> None:
        raise TimeoutError("a dependency's own")

    stream = re.compile(r"^/stream$")
    asyncio.run(RequestTimeout(slow, 0.01, stream)({"type": "http", "path": "/stream"},
                                                   None, send))
    assert sent[-1]["status"] == 200
    with pytest.raises(TimeoutError, match="a dependency's own"):
        asyncio.run(RequestTimeout(failing, 1.0, stream)({"type": "http", "path": "/x"},
                                                         None, send))
