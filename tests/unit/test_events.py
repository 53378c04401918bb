"""Event validation: hand-written cases for every reason, then a property-based fuzz."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from schema_fuzz import (
    arbitrary_bytes,
    assert_agrees_with_schema,
    assert_only_invalid_event,
    fuzz_settings,
    mutated,
)

from services.settings import REPO_ROOT
from streams.events import (
    EVENT_TYPES,
    MAX_FUTURE_MS,
    MAX_PAYLOAD_BYTES,
    MIN_TS_MS,
    InvalidEvent,
    Reason,
    json_schema,
    new_event,
    parse,
    validate,
)

NOW = 1_800_000_000_000


def good(**changes: Any) -> dict[str, Any]:
    event = {"event_id": "0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "user_id": "u1",
             "item_id": "i9", "event_type": "click", "ts": 1_700_000_000_000, "schema_version": 1}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def test_valid_event_round_trips() -> None:
    obj = good(session_id="s1", context={"device": "ios", "page": 3, "ab": True, "w": 0.5,
                                         "big": 2**63 - 1, "low": -2**63})
    event = validate(obj, NOW)
    assert event.to_dict() == obj
    assert parse(event.to_json(), NOW) == event
    assert event.key == b"u1"


def test_integers_written_as_floats_are_integers_as_in_the_schema() -> None:
    """JSON Schema calls ``1.0`` an integer, and so do we: producers in some languages write
    every number so (a worker dead-lettered ``"ts": 1.7e12``, valid for the schema)."""
    event = validate(good(ts=1.7e12, schema_version=1.0), NOW)
    assert (event.ts, event.schema_version) == (1_700_000_000_000, 1)
    assert type(event.ts) is int and orjson.loads(event.to_json())["ts"] == 1_700_000_000_000
    assert _SCHEMA.is_valid(good(ts=1.7e12, schema_version=1.0))


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1, 2], Reason.NOT_AN_OBJECT),
        (good(user_id=...), Reason.MISSING_FIELD),
        (good(extra=1), Reason.UNKNOWN_FIELD),
        (good(user_id=42), Reason.WRONG_TYPE),
        (good(user_id=""), Reason.BAD_VALUE),
        (good(user_id="a\nb"), Reason.BAD_VALUE),
        (good(item_id="x" * 257), Reason.BAD_VALUE),
        (good(event_id="not-a-uuid"), Reason.BAD_VALUE),
        (good(event_type="like"), Reason.UNKNOWN_EVENT_TYPE),
        (good(event_type=None), Reason.WRONG_TYPE),
        (good(ts=-5), Reason.BAD_TIMESTAMP),
        (good(ts=1_700_000_000), Reason.BAD_TIMESTAMP),  # seconds, not ms
        (good(ts=NOW + 2 * 86_400_000), Reason.BAD_TIMESTAMP),  # absurd future
        (good(ts=1.7e12 + 0.5), Reason.WRONG_TYPE),  # a fraction of a millisecond
        # A whole number past 64 bits is an integer to JSON Schema, out of range, as 2**70
        # is (it read as wrong_type, the whole number written with a fraction's spelling)
        (good(ts=1e19), Reason.BAD_TIMESTAMP),
        (good(ts=2**70), Reason.BAD_TIMESTAMP),
        (good(ts=float("inf")), Reason.WRONG_TYPE),
        (good(ts=True), Reason.WRONG_TYPE),
        (good(schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION),
        (good(schema_version=2, device="tv"), Reason.UNKNOWN_SCHEMA_VERSION),  # v2's field
        (good(schema_version="1"), Reason.WRONG_TYPE),
        (good(context=[1]), Reason.WRONG_TYPE),
        (good(context={"k": {"nested": 1}}), Reason.WRONG_TYPE),
        (good(context={"price": float("nan")}), Reason.BAD_VALUE),  # JSON has no NaN
        (good(context={"price": float("-inf")}), Reason.BAD_VALUE),
        (good(context={"n": 2**63}), Reason.BAD_VALUE),  # the producer's encoder: a crash
        (good(context={"n": -2**63 - 1}), Reason.BAD_VALUE),
        (good(context={"n": 2.0**64}), Reason.BAD_VALUE),  # orjson's reading of 2**64
        (good(context={"n": -1e19}), Reason.BAD_VALUE),
        (good(context={7: "a Python caller's key"}), Reason.WRONG_TYPE),
        (good(session_id=7), Reason.WRONG_TYPE),
    ],
)
def test_each_malformed_event_names_its_reason(obj: Any, reason: Reason) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate(obj, NOW)
    assert info.value.reason is reason and info.value.detail


def test_an_integer_from_2_to_the_64_up_is_refused_as_its_neighbours_are() -> None:
    """orjson reads it as a float: it passed as one, and the topic carried its digits."""
    for digits in (b"18446744073709551615", b"18446744073709551616", b"-99999999999999999999"):
        raw = orjson.dumps(good(context={"n": 0})).replace(b'"n":0', b'"n":' + digits)
        with pytest.raises(InvalidEvent, match="past 64 bits") as info:
            parse(raw, NOW)
        assert info.value.reason is Reason.BAD_VALUE


def test_bad_json_and_oversized_payloads() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse(b'{"event_id": ', NOW)
    assert info.value.reason is Reason.BAD_JSON
    big = orjson.dumps(good(context={f"k{i}": "v" * 250 for i in range(32)}))
    assert len(big) > MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidEvent) as info:
        parse(big, NOW)
    assert info.value.reason is Reason.OVERSIZED


def test_new_event_fills_id_and_time() -> None:
    event = new_event("u1", "i2", "purchase")
    assert uuid.UUID(event.event_id) and event.ts > MIN_TS_MS


def test_published_json_schema_matches_the_code() -> None:
    published = json.loads((REPO_ROOT / "streams" / "schema" / "event-v1.json").read_text())
    assert published == json_schema()
    jsonschema.Draft202012Validator.check_schema(published)


@pytest.mark.parametrize(("field", "value"), [
    ("event_id", "0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e\n"), ("user_id", "u1\n"),
    ("item_id", "i1\n"), ("session_id", "s1\n")])
def test_a_trailing_newline_is_refused_by_the_schema_as_by_the_validator(
        field: str, value: str) -> None:
    """An anchored ``^...$`` pattern let Python's ``re.search`` match ``$`` before a final
    newline: a producer checking against the published schema sent events that were
    dead-lettered."""
    obj = {**orjson.loads(new_event("u1", "i1", "click").to_json()), "ts": NOW, field: value}
    assert not _SCHEMA.is_valid(obj)
    with pytest.raises(InvalidEvent):
        validate(obj, NOW)


# --- property-based fuzz ----------------------------------------------------------------
ids = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S"), include_characters=" "),
              min_size=1, max_size=40)
scalars = st.one_of(ids, st.integers(-2**53, 2**53), st.booleans(),
                    st.floats(-2.0**63, 2.0**63, allow_nan=False, exclude_max=True))
well_formed = st.fixed_dictionaries(
    {"event_id": st.uuids().map(str), "user_id": ids, "item_id": ids,
     "event_type": st.sampled_from(EVENT_TYPES), "ts": st.integers(MIN_TS_MS, NOW),
     "schema_version": st.just(1)},
    optional={"session_id": ids, "context": st.dictionaries(
        st.text(min_size=1, max_size=20), scalars, max_size=5)},
)
_BAD = {"event_id": "x", "user_id": "", "item_id": "\x00", "event_type": "VIEW", "ts": -1,
        "schema_version": 99, "session_id": "", "context": {"": 1}}
_SCHEMA = jsonschema.Draft202012Validator(json_schema())
FUZZ = fuzz_settings(max_examples=4000)


@FUZZ
@given(well_formed)
def test_fuzz_well_formed_events_round_trip_unchanged(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    event = parse(raw, NOW)
    assert orjson.loads(event.to_json()) == obj
    assert _SCHEMA.is_valid(obj)


def _stricter_than_the_schema(obj: dict[str, Any]) -> bool:
    """Stricter than the JSON Schema can say: printable ids, and ts at most now + 1 day
    and within 64 bits (documented in json_schema())."""
    text = [obj.get(k) for k in ("user_id", "item_id", "session_id")]
    ts = obj.get("ts")
    return (any(isinstance(v, str) and not v.isprintable() for v in text)
            or (type(ts) in (int, float) and ts > NOW + MAX_FUTURE_MS))


@FUZZ
@given(mutated(well_formed, _BAD, only_present=True))
def test_fuzz_mutated_events_follow_the_published_schema(obj: dict[str, Any]) -> None:
    """Our verdict agrees with the JSON Schema; a rejection always carries a reason."""
    assert_agrees_with_schema(lambda o: validate(o, NOW), obj, _SCHEMA,
                              stricter=_stricter_than_the_schema)


@FUZZ
@given(arbitrary_bytes)
def test_fuzz_arbitrary_bytes_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    assert_only_invalid_event(lambda r: parse(r, NOW), raw)
