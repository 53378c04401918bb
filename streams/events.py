"""The interaction event: declared once, used by producers, stream processors and tests.

Wire format: one JSON object per Kafka record (orjson), key = ``user_id`` so one user's
events stay ordered on one partition. The JSON Schema in ``streams/schema/event-v1.json``
describes the same rules for other languages; a test keeps the two in step.

Versioning: a new schema version may only add optional fields. A record with a
``schema_version`` this code does not know is rejected (it goes to the dead-letter
topic), never guessed at.

Validation is hand-written rather than done by a schema library because it runs once per
event on the producer and again in the stream workers: it must cost about a microsecond.
"""

from __future__ import annotations

import codecs
import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import IO, Any

import orjson

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
MAX_PAYLOAD_BYTES = 8 * 1024
MAX_ID_LENGTH = 256
# C0 and C1 control characters, as a JSON Schema (ECMA-262) character range: what the
# published schemas can say of "printable" (str.isprintable also refuses other
# separators and format characters, such as U+00A0 and U+200B).
CONTROL_CHARACTERS = "\\u0000-\\u001f\\u007f-\\u009f"
# A JSON Schema's "no control character", searched for unanchored: an anchored
# ``^[^...]*$`` let Python's ``re.search`` (the ``jsonschema`` library's) match ``$``
# before a final newline, so the schema took ``"u1\n"``, which the validators refuse.
NO_CONTROL: dict[str, Any] = {"not": {"pattern": f"[{CONTROL_CHARACTERS}]"}}
MAX_CONTEXT_KEYS = 32
MIN_TS_MS = 631_152_000_000  # 1990-01-01: smaller values are mostly seconds sent as ms
MAX_FUTURE_MS = 24 * 3600 * 1000  # clock skew we tolerate ahead of this machine's clock

REQUIRED = ("event_id", "user_id", "item_id", "event_type", "ts", "schema_version")
OPTIONAL = ("session_id", "context")
_KNOWN = frozenset(REQUIRED + OPTIONAL)
_EVENT_TYPES = frozenset(EVENT_TYPES)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Reason(StrEnum):
    """Why a record was rejected: the value travels in the dead-letter header ``reason``."""

    OVERSIZED = "oversized"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    EMPTY_RECORD = "empty_record"          # a null value: a tombstone, or nothing sent
    WRONG_KEY = "wrong_key"  # the record's Kafka key is not its user id (the worker's check)
    PROCESSING_ERROR = "processing_error"  # the worker failed on it otherwise (detail: why)


class InvalidEvent(ValueError):
    """A record that does not follow the schema; ``reason`` is machine-readable."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Event:
    """One user interaction. Construct with :func:`new_event` or parse with :func:`parse`.

    Treat it as immutable. It is not a frozen dataclass because frozen ones cost about
    a microsecond more to build, and one is built per event on every hot path.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: int  # event time, epoch milliseconds
    schema_version: int = SCHEMA_VERSION
    session_id: str | None = None
    context: dict[str, str | int | float | bool] | None = None

    @property
    def key(self) -> bytes:
        return self.user_id.encode()

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
            "event_type": self.event_type, "ts": self.ts, "schema_version": self.schema_version,
        }
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.context is not None:
            out["context"] = self.context
        return out


def sent_no_later(event: Event, sent_ms: int | None, now_ms: int | None = None) -> Event:
    """``event`` with its time brought back to when it was sent (``sent_ms``: its Kafka
    record's timestamp; None or 0 when unknown) or to ``now_ms`` (the reader's clock),
    whichever is earlier, if stamped after that. Validation lets a device's clock run up
    to a day ahead; taken at its word such an event is its session's newest for that long
    (every later one reads as late) and outweighs current ones in popularity. The send
    time, not the reader's clock alone: a worker running behind the stream reads it later
    than the events sent after it. The workers and the trainer read times through this."""
    if sent_ms is None or sent_ms <= 0:
        limit = now_ms
    else:
        limit = sent_ms if now_ms is None else min(sent_ms, now_ms)
    if limit is None or event.ts <= limit:
        return event
    return replace(event, ts=limit)


def new_event(user_id: str, item_id: str, event_type: str = "view", ts: int | None = None,
              session_id: str | None = None, context: dict[str, Any] | None = None,
              event_id: str | None = None) -> Event:
    """Build and validate an event; fills a random ``event_id`` and the current time."""
    obj: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()), "user_id": user_id, "item_id": item_id,
        "event_type": event_type, "ts": int(time.time() * 1000) if ts is None else ts,
        "schema_version": SCHEMA_VERSION,
    }
    if session_id is not None:
        obj["session_id"] = session_id
    if context is not None:
        obj["context"] = context
    return validate(obj)


def parse(raw: bytes | None, now_ms: int | None = None) -> Event:
    """Bytes from the wire to an Event, or InvalidEvent with the reason."""
    return validate(decode_record(raw, MAX_PAYLOAD_BYTES), now_ms)


def reencoded(value: Any) -> bytes:
    """A JSON value already decoded (one of a request's array), as bytes again for the
    validators that read bytes. orjson writes at most 254 levels of nesting where it reads
    1024: deeper is refused as bad JSON, where the API answered 500."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(Reason.BAD_JSON, f"not writable as JSON: {exc}") from None


def check_size(raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
    """InvalidEvent (``oversized``) for a record past ``max_bytes``. Producers check what
    they encode too: an ``Event`` built in Python passes ``validate``, which reads no
    bytes, and would reach the topic only for the worker to dead-letter it."""
    if len(raw) > max_bytes:
        raise InvalidEvent(Reason.OVERSIZED, f"{len(raw)} bytes > {max_bytes}")


def decode_record(raw: bytes | None, max_bytes: int) -> Any:
    """A record's JSON value, or InvalidEvent: a tombstone, an oversized record, bad JSON.
    What the value must hold is each record kind's own ``validate``."""
    if raw is None:
        raise InvalidEvent(Reason.EMPTY_RECORD, "the record has no value (a tombstone?)")
    check_size(raw, max_bytes)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(Reason.BAD_JSON, str(exc)) from None


def validate(obj: Any, now_ms: int | None = None) -> Event:
    """A decoded JSON value to an Event, or InvalidEvent naming the first problem found."""
    if type(obj) is not dict:
        raise InvalidEvent(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    try:
        version = obj["schema_version"]
        event_id = obj["event_id"]
        event_type = obj["event_type"]
        ts = obj["ts"]
        user_id = obj["user_id"]
        item_id = obj["item_id"]
    except KeyError as exc:
        raise InvalidEvent(Reason.MISSING_FIELD, f"{exc.args[0]} is required") from None
    if (version := json_integer(version)) is None:
        raise InvalidEvent(Reason.WRONG_TYPE, "schema_version must be an integer")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidEvent(Reason.UNKNOWN_SCHEMA_VERSION,
                           f"schema_version {version} is not one of {sorted(SUPPORTED_VERSIONS)}")
    if not obj.keys() <= _KNOWN:  # after the version: a newer one's fields are not unknown
        raise InvalidEvent(Reason.UNKNOWN_FIELD, f"unknown fields {sorted(obj.keys() - _KNOWN)}")
    if type(event_id) is not str:
        raise InvalidEvent(Reason.WRONG_TYPE, "event_id must be a string")
    if len(event_id) != 36 or _UUID.fullmatch(event_id) is None:
        raise InvalidEvent(Reason.BAD_VALUE, "event_id must be a UUID (8-4-4-4-12 hex)")
    if type(event_type) is not str:
        raise InvalidEvent(Reason.WRONG_TYPE, "event_type must be a string")
    if event_type not in _EVENT_TYPES:
        raise InvalidEvent(Reason.UNKNOWN_EVENT_TYPE,
                           f"{event_type[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
    ts = json_integer(raw_ts := ts)
    if ts is None and not (type(raw_ts) is float and raw_ts.is_integer()):
        raise InvalidEvent(Reason.WRONG_TYPE, "ts must be an integer (epoch milliseconds)")
    latest = (int(time.time() * 1000) if now_ms is None else now_ms) + MAX_FUTURE_MS
    if ts is None or not MIN_TS_MS <= ts <= latest:  # None: a whole number past 64 bits
        raise InvalidEvent(Reason.BAD_TIMESTAMP, f"ts {raw_ts} is outside [{MIN_TS_MS}, "
                                                 "now + 1 day] (epoch milliseconds)")
    _check_text("user_id", user_id)
    _check_text("item_id", item_id)
    session_id = obj.get("session_id")
    if session_id is not None:
        _check_text("session_id", session_id)
    context = obj.get("context")
    if context is not None:
        _check_context(context)
    return Event(event_id, user_id, item_id, event_type, ts, version, session_id, context)


def json_lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line of a JSON-lines file, without its line
    end, nor the UTF-8 byte-order mark some editors write first (not JSON: it would cost
    the file its first record)."""
    for number, raw in enumerate(handle, 1):
        raw = raw.rstrip(b"\r\n")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if raw.strip():
            yield number, raw


def json_integer(value: Any) -> int | None:
    """``value`` as an integer the way JSON Schema reads one: an int (never a bool), or a
    float without a fraction within 64 bits (``1.0``, ``1.7e12``: how some producers write
    numbers, and valid for the published schemas); None for anything else."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return None


def _check_text(name: str, value: Any) -> None:
    if type(value) is not str:
        raise InvalidEvent(Reason.WRONG_TYPE, f"{name} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise InvalidEvent(Reason.BAD_VALUE,
                           f"{name} must be 1..{MAX_ID_LENGTH} printable characters")


def _check_context(context: Any) -> None:
    if type(context) is not dict:
        raise InvalidEvent(Reason.WRONG_TYPE, "context must be an object")
    if len(context) > MAX_CONTEXT_KEYS:
        raise InvalidEvent(Reason.BAD_VALUE, f"context has more than {MAX_CONTEXT_KEYS} keys")
    for key, value in context.items():
        if type(key) is not str:  # JSON's are; a Python caller's may not be
            raise InvalidEvent(Reason.WRONG_TYPE, "context keys must be strings")
        if not 0 < len(key) <= 64:
            raise InvalidEvent(Reason.BAD_VALUE, "context keys must be 1..64 characters")
        if type(value) not in (str, int, float, bool):
            raise InvalidEvent(Reason.WRONG_TYPE,
                               f"context[{key[:40]!r}] must be a string, number or boolean")
        if type(value) is str and len(value) > MAX_ID_LENGTH:
            raise InvalidEvent(Reason.BAD_VALUE, f"context[{key[:40]!r}] is too long")
        if type(value) is float and not math.isfinite(value):  # JSON has no NaN: it would
            raise InvalidEvent(Reason.BAD_VALUE,                 # go out as null
                               f"context[{key[:40]!r}] must be a finite number")
        # The producer's encoder and other languages stop at 64 bits; a float too, as
        # orjson reads an integer from 2**64 up as one, and the topic carries its digits.
        if type(value) in (int, float) and not -2**63 <= value < 2**63:
            raise InvalidEvent(Reason.BAD_VALUE,
                               f"context[{key[:40]!r}] is a number past 64 bits (±2^63)")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the wire format, for other languages and docs.

    Three rules are not expressed there and live only in :func:`parse`: the payload
    size limit, the upper bound of ``ts`` (now + 1 day), and ids being printable past the
    control characters the pattern refuses (Python's ``str.isprintable``). Two more come
    from the JSON reader, which refuses them as ``bad_json``: a number past a double's
    range (``1e400``) and an escaped lone surrogate (``"\ud800"``), both valid JSON text.
    """
    text = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, **NO_CONTROL,
            "description": "printable characters (Python's str.isprintable): no control "
                           "or format characters, and no separator other than the space"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://streamrec.dev/schema/event-v1.json",
        "title": "streamrec interaction event",
        "type": "object",
        "additionalProperties": False,
        "required": list(REQUIRED),
        "properties": {
            "event_id": {"type": "string", "minLength": 36, "maxLength": 36,
                         "pattern": f"^{_UUID.pattern}$"},
            "user_id": text,
            "item_id": text,
            "event_type": {"enum": list(EVENT_TYPES)},
            "ts": {"type": "integer", "minimum": MIN_TS_MS,
                   "description": "event time, epoch milliseconds; at most now + 1 day"},
            "schema_version": {"const": SCHEMA_VERSION},
            "session_id": {"oneOf": [text, {"type": "null"}]},
            "context": {
                "oneOf": [{"type": "null"}, {
                    "type": "object", "maxProperties": MAX_CONTEXT_KEYS,
                    "propertyNames": {"minLength": 1, "maxLength": 64},
                    "additionalProperties": {"oneOf": [
                        {"type": "string", "maxLength": MAX_ID_LENGTH},
                        {"type": "number", "minimum": -2**63, "exclusiveMaximum": 2**63,
                         "description": "within 64 bits (signed), as other languages read "
                                        "an integer"},
                        {"type": "boolean"}]},
                }],
            },
        },
    }
