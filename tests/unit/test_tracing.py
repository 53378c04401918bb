"""W3C trace context: what passes as a traceparent or tracestate, what a record or a request
hands on, and the span per published list, with OpenTelemetry and without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.settings import REPO_ROOT
from streams.tracing import (
    ListSpans,
    checked,
    from_record,
    from_request,
    valid_traceparent,
    valid_tracestate,
)

TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize("value, valid", [
    (PARENT, True),
    (f"00-{TRACE_ID}-{PARENT_ID}-00", True),               # not sampled: still carried
    (f"01-{TRACE_ID}-{PARENT_ID}-01-what-v1-adds", True),  # a later version may append
    (f"01-{TRACE_ID}-{PARENT_ID}-01", True),
    (f"00-{TRACE_ID}-{PARENT_ID}-01-extra", False),        # version 00 may not
    (f"01-{TRACE_ID}-{PARENT_ID}-01extra", False),
    (f"ff-{TRACE_ID}-{PARENT_ID}-01", False),              # version ff is forbidden
    (f"00-{'0' * 32}-{PARENT_ID}-01", False),              # all-zero ids
    (f"00-{TRACE_ID}-{'0' * 16}-01", False),
    (PARENT.upper(), False),                                # lower-case hex only
    (PARENT[:-1], False),
    (f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01", False),
    (f" {PARENT}", False),
    ("", False),
    ("garbage", False),
    (f"01-{TRACE_ID}-{PARENT_ID}-01-{'x' * 456}", True),   # 512 characters in all
    (f"01-{TRACE_ID}-{PARENT_ID}-01-{'x' * 100_000}", False),  # copied onto every event
])
def test_traceparent_follows_trace_context_level_1(value: str, valid: bool) -> None:
    assert valid_traceparent(value) is valid


@pytest.mark.parametrize("value, valid", [
    ("congo=t61rcWkgMzE", True),
    ("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", True),
    ("tenant@vendor=x,,", True),          # empty members are allowed
    ("Congo=x", False),                   # keys are lower case
    ("congo=", False),
    ("congo=a=b", False),
    ("congo", False),
    (",".join(f"k{i}=v" for i in range(33)), False),  # at most 32 members
    ("k=" + "v" * 600, False),
])
def test_tracestate_members_are_checked(value: str, valid: bool) -> None:
    assert valid_tracestate(value) is valid


def test_a_malformed_header_is_dropped_and_tracestate_never_goes_alone() -> None:
    assert checked(PARENT, "congo=x") == (("traceparent", PARENT.encode()),
                                          ("tracestate", b"congo=x"))
    assert checked(PARENT, "Bad State") == (("traceparent", PARENT.encode()),)
    assert checked("00-nope", "congo=x") == checked(None, "congo=x") == ()


def test_records_hand_on_only_valid_trace_headers() -> None:
    assert from_record({"sent_us": b"1"}) == ()
    assert from_record({"traceparent": PARENT.encode(), "tracestate": b"congo=x"}) == (
        ("traceparent", PARENT.encode()), ("tracestate", b"congo=x"))
    assert from_record({"traceparent": b"\xff\xfe"}) == ()
    assert from_record({"traceparent": b"00-0-0-0", "tracestate": b"congo=x"}) == ()


def test_a_request_hands_on_its_header_or_the_current_span() -> None:
    assert from_request(PARENT, "congo=x") == checked(PARENT, "congo=x")
    assert from_request("nonsense", None) == ()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("POST /v1/events") as span:
        ((name, value),) = from_request("nonsense", None)
    context = span.get_span_context()
    assert name == "traceparent" and value.decode().split("-")[1:3] == [
        f"{context.trace_id:032x}", f"{context.span_id:016x}"]


def test_each_published_list_gets_a_span_in_its_events_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = ListSpans("recommendations", provider.get_tracer("test"))
    headers = dict(spans.headers(checked(PARENT, "congo=x"), 1_000,
                                 {"streamrec.path": "model"}))
    (span,) = exporter.get_finished_spans()
    assert span.name == "streamrec.publish" and span.kind == trace.SpanKind.PRODUCER
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert f"{span.context.trace_id:032x}" == TRACE_ID and span.start_time == 1_000
    assert span.attributes == {"messaging.system": "kafka",
                               "messaging.destination.name": "recommendations",
                               "streamrec.path": "model"}
    # The list carries the same trace, with the worker's span as its parent.
    assert headers == {"traceparent": f"00-{TRACE_ID}-{span.context.span_id:016x}-01".encode(),
                       "tracestate": b"congo=x"}


def test_without_a_configured_tracer_the_headers_go_on_unchanged() -> None:
    carried = checked(PARENT, "congo=x")
    assert ListSpans("recommendations").headers(carried, 0, {}) == carried
    assert ListSpans("recommendations").headers((), 0, {}) == ()


def test_without_opentelemetry_installed_headers_pass_through() -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from streams import tracing
        carried = tracing.checked({PARENT!r}, "congo=x")
        assert tracing.otel is None
        assert tracing.ListSpans("recommendations").headers(carried, 0, {{}}) == carried
        assert tracing.from_request({PARENT!r}, None) == carried[:1]
        assert tracing.from_request("bad", None) == ()
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
