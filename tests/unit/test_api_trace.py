"""``POST /v1/events`` hands the request's W3C trace context to Kafka: the route reads it,
the ingest puts it on every event record, next to ``sent_us``; a malformed one is dropped
and the events still go."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from api_fakes import InProcessApi

from services.api import ingest as ingest_module
from services.api.ingest import EventIngest
from streams.events import new_event

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
Headers = list[tuple[str, bytes]]


class AckingProducer:
    """Stands in for librdkafka's producer: keeps each record and acknowledges it at once."""

    def __init__(self, kafka: object, config: object = None) -> None:
        self.records: list[tuple[str, bytes | None, Headers]] = []

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
                on_delivery: Callable[[object, object], None], wait_for_room: bool = True
                ) -> None:
        self.records.append((topic, key, headers))
        on_delivery(None, None)

    def room(self) -> int:
        return 1000

    def poll(self, timeout_s: float) -> None:
        time.sleep(timeout_s)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("request_headers, carried", [
    ({"traceparent": TRACEPARENT, "tracestate": "congo=x"},
     [("traceparent", TRACEPARENT.encode()), ("tracestate", b"congo=x")]),
    ({"traceparent": TRACEPARENT.upper(), "tracestate": "congo=x"}, []),  # malformed
    ({}, []),
])
def test_posted_events_carry_the_requests_trace_context_to_kafka(
        clean_env: pytest.MonkeyPatch, request_headers: dict[str, str], carried: Headers
        ) -> None:
    clean_env.setattr(ingest_module, "RecordProducer", AckingProducer)
    api = InProcessApi()
    ingest = api.app.state.backends.ingest = EventIngest(api.settings.kafka, "interactions")
    body = b"[%s,%s]" % (new_event("u1", "i1").to_json(), new_event("u2", "i2").to_json())
    try:
        response = api.call("POST", "/v1/events", content=body, headers=request_headers)
    finally:
        ingest.close()
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    records = ingest.producer.records
    assert [(topic, key) for topic, key, _ in records] == [("interactions", b"u1"),
                                                           ("interactions", b"u2")]
    for _, _, headers in records:
        assert headers[0][0] == "sent_us" and headers[1:] == carried


def test_the_event_route_documents_the_trace_headers(clean_env: pytest.MonkeyPatch) -> None:
    doc = InProcessApi().get("/openapi.json").json()
    params = doc["paths"]["/v1/events"]["post"]["parameters"]
    assert {(p["name"], p["in"], p["required"]) for p in params} >= {
        ("traceparent", "header", False), ("tracestate", "header", False)}
