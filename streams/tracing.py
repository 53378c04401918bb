"""W3C trace context (``traceparent``, ``tracestate``) from a posted event to its list.

The API puts the trace context of ``POST /v1/events`` on each event record as Kafka
headers; the worker puts the event's on the list it publishes for it, so a list on the
``recommendations`` topic carries the trace id of the request that caused it. Headers are
validated at each hop (a malformed one is dropped, never fatal): anyone may write to the
topic or send the request.

OpenTelemetry is optional (the ``otel`` extra), and this is the only module that imports
it. Without it the headers pass through as they came. With it, the API sends its current
span's context when it has one, and the worker records a span per published list, a child
of the event's context, whose context the list then carries; spans reach an exporter only
when a tracer provider is configured (``opentelemetry-instrument``), else they cost a few
microseconds and the headers go on unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

try:  # the ``otel`` extra
    from opentelemetry import trace as otel
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:
    otel = None  # type: ignore[assignment]
else:
    _PROPAGATOR = TraceContextTextMapPropagator()

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
TraceHeaders = tuple[tuple[str, bytes], ...]  # Kafka headers, ready to send

# version-trace_id-parent_id-flags, lower-case hex; version ff and all-zero ids are invalid.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
MAX_TRACESTATE_CHARS, MAX_TRACESTATE_MEMBERS = 512, 32
MAX_TRACEPARENT_CHARS = 512


def valid_traceparent(value: str) -> bool:
    """Trace Context level 1: version 00 is exactly 55 characters; a later version may
    append fields after a dash, which a reader of 00 must accept and ignore, up to
    ``MAX_TRACEPARENT_CHARS`` in all: the header is copied onto every event of a request
    and every list they produce, so an unbounded tail turned a 1 MiB request into ~100 MB
    queued for Kafka."""
    if len(value) > MAX_TRACEPARENT_CHARS:
        return False
    match = _TRACEPARENT.match(value)
    if match is None:
        return False
    rest = value[match.end():]
    return not rest or (not value.startswith("00") and rest.startswith("-"))


def valid_tracestate(value: str) -> bool:
    """Up to 32 ``key=value`` members, comma-separated; empty members are allowed."""
    if len(value) > MAX_TRACESTATE_CHARS:
        return False
    members = [m.strip(" \t") for m in value.split(",")]
    return (len(members) <= MAX_TRACESTATE_MEMBERS
            and all(not m or _TRACESTATE_MEMBER.fullmatch(m) for m in members))


def checked(traceparent: str | None, tracestate: str | None = None) -> TraceHeaders:
    """The headers to pass on: none without a valid traceparent (the standard forbids
    reading tracestate then), and the traceparent alone when tracestate is malformed."""
    if traceparent is None or not valid_traceparent(traceparent):
        return ()
    parent = ((TRACEPARENT, traceparent.encode()),)
    if tracestate and valid_tracestate(tracestate):
        return (*parent, (TRACESTATE, tracestate.encode()))
    return parent


def from_record(headers: Mapping[str, bytes | None]) -> TraceHeaders:
    """The valid trace headers of a consumed record. Runs per event: one lookup when
    the record has none."""
    parent = headers.get(TRACEPARENT)
    if parent is None:
        return ()
    state = headers.get(TRACESTATE)
    try:
        return checked(parent.decode("ascii"), state.decode("ascii") if state else None)
    except UnicodeDecodeError:
        return ()


def from_request(traceparent: str | None, tracestate: str | None) -> TraceHeaders:
    """What posted events carry: the current span's context when OpenTelemetry has one
    (an instrumented API, whose server span is a child of the request's header), else
    the request's headers."""
    if otel is not None and otel.get_current_span().get_span_context().is_valid:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return checked(carrier.get(TRACEPARENT), carrier.get(TRACESTATE))
    return checked(traceparent, tracestate)


class ListSpans:
    """One span per published list, a child of its event's trace context.

    ``tracer``: an OpenTelemetry tracer; by default the global one when OpenTelemetry is
    installed (a no-op until a provider is configured), else none: headers pass through.
    """

    def __init__(self, topic: str, tracer: Any = None) -> None:
        if tracer is None and otel is not None:
            tracer = otel.get_tracer("streamrec.worker")
        self.topic, self.tracer = topic, tracer

    def headers(self, carried: TraceHeaders, began_ns: int, attributes: Mapping[str, str]
                ) -> TraceHeaders:
        """The headers for a list whose event carried ``carried``. The span runs from
        ``began_ns`` (its micro-batch's start: the model's work is in it) to now, when
        the list is handed to the producer."""
        if self.tracer is None or not carried:
            return carried
        parent = _PROPAGATOR.extract({k: v.decode() for k, v in carried})
        span = self.tracer.start_span(
            "streamrec.publish", context=parent, kind=otel.SpanKind.PRODUCER,
            start_time=began_ns, attributes={"messaging.system": "kafka",
                                             "messaging.destination.name": self.topic,
                                             **attributes})
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=otel.set_span_in_context(span))
        span.end()
        return checked(carrier.get(TRACEPARENT), carrier.get(TRACESTATE))
