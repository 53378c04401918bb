"""The catalogue record: hand-written cases for every rule, the published schema in step,
then a property-based fuzz against that schema."""

from __future__ import annotations

import json
import math
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
from streams.catalog import (
    MAX_CATEGORIES,
    MAX_RECORD_BYTES,
    MAX_TEXT_LENGTH,
    ItemRecord,
    json_schema,
    parse_item,
    parse_keyed_item,
)
from streams.events import InvalidEvent, Reason


def full(**changes: Any) -> dict[str, Any]:
    record = {"item_id": "i9", "title": "Toy Story (1995)", "text": "A toy.\nAnd a cowboy.",
              "categories": ["Animation", "Comedy"], "brand": "Pixar", "price": 9.5,
              "attributes": {"year": 1995, "rating": 4.2}, "image_url": "https://x.io/a.jpg",
              "schema_version": 1}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def test_the_issue_example_is_a_valid_record() -> None:
    item = parse_item(b'{"item_id": "4", "categories": ["a1", "a2"]}')
    assert item == ItemRecord("4", categories=("a1", "a2"))
    assert item.key == b"4" and item.schema_version == 1
    assert orjson.loads(item.to_json()) == {"item_id": "4", "categories": ["a1", "a2"],
                                            "schema_version": 1}


@pytest.mark.parametrize("raw", [orjson.dumps(full()), orjson.dumps(full()).decode(), full()])
def test_a_full_record_round_trips_from_bytes_text_or_an_object(raw: Any) -> None:
    item = parse_item(raw)
    assert item.to_dict() == full()
    assert parse_item(item.to_json()) == item
    assert item.categories == ("Animation", "Comedy") and item.attributes["year"] == 1995


def test_a_record_read_from_the_topic_is_keyed_by_its_item_id() -> None:
    """Workers and the trainer read the items topic alike: a record keyed as another item
    would outlive its item's tombstone in compaction."""
    value = orjson.dumps({"item_id": "e", "title": "E"})
    assert parse_keyed_item(b"e", value) == ItemRecord("e", title="E")
    assert parse_keyed_item(None, value).item_id == "e"  # no key to disagree with
    with pytest.raises(InvalidEvent) as info:
        parse_keyed_item(b"d", value)
    assert info.value.reason is Reason.WRONG_KEY and "'e'" in info.value.detail


def test_null_fields_count_as_absent_and_the_version_defaults_to_1() -> None:
    nulls = {k: None for k in ("title", "text", "categories", "brand", "price", "attributes",
                               "image_url", "schema_version")}
    assert parse_item({"item_id": "x", **nulls}) == ItemRecord("x")
    empty = parse_item({"item_id": "x", "categories": [], "attributes": {}})
    assert empty == ItemRecord("x") and empty.to_dict() == {"item_id": "x", "schema_version": 1}
    assert parse_item({"item_id": "x", "price": 0}).price == 0  # free is a price
    version = parse_item({"item_id": "x", "schema_version": 1.0}).schema_version
    assert version == 1 and type(version) is int  # an integer to JSON Schema, and to us


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1], Reason.NOT_AN_OBJECT),
        ({"title": "no id"}, Reason.MISSING_FIELD),
        (full(colour="red"), Reason.UNKNOWN_FIELD),
        (full(schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION),
        (full(schema_version=2, colour="red"), Reason.UNKNOWN_SCHEMA_VERSION),  # v2's field
        (full(schema_version="1"), Reason.WRONG_TYPE),
        (full(schema_version=True), Reason.WRONG_TYPE),
        (full(schema_version=1.5), Reason.WRONG_TYPE),
        (full(item_id=4), Reason.WRONG_TYPE),
        (full(item_id=""), Reason.BAD_VALUE),
        (full(item_id="a\tb"), Reason.BAD_VALUE),
        (full(item_id="x" * 257), Reason.BAD_VALUE),
        (full(title=""), Reason.BAD_VALUE),
        (full(title="two\nlines"), Reason.BAD_VALUE),
        (full(title="x" * 1025), Reason.BAD_VALUE),
        (full(title=7), Reason.WRONG_TYPE),
        (full(text=""), Reason.BAD_VALUE),
        (full(text="x" * (MAX_TEXT_LENGTH + 1)), Reason.BAD_VALUE),
        (full(categories="Comedy"), Reason.WRONG_TYPE),
        (full(categories=["a", None]), Reason.WRONG_TYPE),
        (full(categories=["a", "a"]), Reason.BAD_VALUE),
        (full(categories=[""]), Reason.BAD_VALUE),
        (full(categories=[f"c{i}" for i in range(MAX_CATEGORIES + 1)]), Reason.BAD_VALUE),
        (full(brand="x" * 257), Reason.BAD_VALUE),
        (full(price=-0.01), Reason.BAD_VALUE),
        (full(price="9.50"), Reason.WRONG_TYPE),
        (full(price=True), Reason.WRONG_TYPE),
        (full(price=math.inf), Reason.BAD_VALUE),
        (full(price=math.nan), Reason.BAD_VALUE),
        (full(price=2**64), Reason.BAD_VALUE),
        (full(attributes=[1995]), Reason.WRONG_TYPE),
        (full(attributes={"year": "1995"}), Reason.WRONG_TYPE),
        (full(attributes={"year": math.nan}), Reason.BAD_VALUE),
        (full(attributes={"price": 3}), Reason.BAD_VALUE),  # price has its own field
        (full(attributes={"": 3}), Reason.BAD_VALUE),
        (full(attributes={f"k{i}": i for i in range(33)}), Reason.BAD_VALUE),
        (full(image_url="javascript:alert(1)"), Reason.BAD_VALUE),
        (full(image_url="https://x.io/a b.jpg"), Reason.BAD_VALUE),
    ],
)
def test_each_malformed_record_names_its_reason(obj: Any, reason: Reason) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_item(obj)
    assert info.value.reason is reason and info.value.detail


def test_bad_json_oversized_and_empty_values() -> None:
    for raw, reason in [(b'{"item_id": ', Reason.BAD_JSON), (b"NaN", Reason.BAD_JSON),
                        (b" " * (MAX_RECORD_BYTES + 1), Reason.OVERSIZED),
                        (None, Reason.EMPTY_RECORD)]:
        with pytest.raises(InvalidEvent) as info:
            parse_item(raw)
        assert info.value.reason is reason


def test_published_json_schema_matches_the_code() -> None:
    published = json.loads((REPO_ROOT / "streams" / "schema" / "item-v1.json").read_text())
    assert published == json_schema(), "regenerate streams/schema/item-v1.json from " \
        "streams.catalog.json_schema()"
    jsonschema.Draft202012Validator.check_schema(published)


@pytest.mark.parametrize(("field", "value"), [
    ("item_id", "i1\n"), ("title", "Toy Story\n"), ("brand", "Acme\n"),
    ("categories", ["a\n"]), ("attributes", {"year\n": 1}),
    ("image_url", "http://x.com/a\n"), ("image_url", "https://")])
def test_a_trailing_newline_is_refused_by_the_schema_as_by_the_parser(
        field: str, value: Any) -> None:
    """An anchored ``^...$`` pattern let Python's ``re.search`` match ``$`` before a final
    newline: the schema took records ``parse_item`` refuses."""
    obj = {"item_id": "i1", field: value}
    assert not _SCHEMA.is_valid(obj)
    with pytest.raises(InvalidEvent):
        parse_item(orjson.dumps(obj))


# --- property-based fuzz ----------------------------------------------------------------
names = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
                min_size=1, max_size=30)
numbers = st.integers(-2**63, 2**63 - 1) | st.floats(-2.0**63, 2.0**63, exclude_max=True)
well_formed = st.fixed_dictionaries(
    {"item_id": names.filter(str.isprintable)},
    optional={"title": names, "text": st.text(min_size=1, max_size=60), "brand": names,
              "categories": st.lists(names, min_size=1, max_size=5, unique=True),
              "price": st.floats(0, 1e9) | st.integers(0, 10**6),
              "attributes": st.dictionaries(names.filter(lambda k: k != "price"), numbers,
                                            min_size=1, max_size=4),
              "image_url": st.just("https://img.example/a.jpg"), "schema_version": st.just(1)},
)


@pytest.mark.parametrize(("wire", "refused"), [
    (b'{"item_id": "a", "price": 9223372036854775807}', False),
    (b'{"item_id": "a", "price": 9223372036854775808}', True),
    (b'{"item_id": "a", "price": 18446744073709551616}', True),  # orjson: a float
    (b'{"item_id": "a", "attributes": {"y": -9223372036854775808}}', False),
    (b'{"item_id": "a", "attributes": {"y": -10000000000000000000}}', True),  # a float too
    (b'{"item_id": "a", "attributes": {"y": 1e300}}', True),
])
def test_numbers_past_64_bits_are_refused_on_the_wire_as_the_schema_says(
        wire: bytes, refused: bool) -> None:
    """orjson reads an integer from 2^64 up as a float: 2^63 was refused and 2^64 taken."""
    if refused:
        with pytest.raises(InvalidEvent, match="past 64 bits"):
            parse_item(wire)
    else:
        parse_item(wire)
    assert _SCHEMA.is_valid(json.loads(wire)) is not refused


_BAD = {"item_id": "", "title": "a\nb", "text": "", "brand": "\x00", "categories": ["a", "a"],
        "price": -1, "attributes": {"price": 1}, "image_url": "ftp://x", "schema_version": 9}
_SCHEMA = jsonschema.Draft202012Validator(json_schema())
FUZZ = fuzz_settings(max_examples=1500)


@FUZZ
@given(well_formed)
def test_fuzz_well_formed_records_round_trip_and_follow_the_schema(obj: dict[str, Any]) -> None:
    item = parse_item(orjson.dumps(obj))
    assert orjson.loads(item.to_json()) == {**obj, "schema_version": 1}
    assert _SCHEMA.is_valid(obj)


def _unprintable_item_id(obj: dict[str, Any]) -> bool:
    item_id = obj.get("item_id")
    return isinstance(item_id, str) and not item_id.isprintable()


@FUZZ
@given(mutated(well_formed, _BAD, only_present=False))
def test_fuzz_mutated_records_follow_the_published_schema(obj: dict[str, Any]) -> None:
    """Our verdict agrees with the JSON Schema; a rejection always carries a reason.
    Stricter than the schema can say (documented in json_schema()): a printable item_id.
    Both judge the record as it reaches the wire: JSON has no infinity, and orjson
    writes ``inf`` as null (``{"attributes": inf}`` was a false alarm)."""
    wire = orjson.loads(orjson.dumps(obj))
    assert_agrees_with_schema(lambda o: parse_item(orjson.dumps(o)), wire, _SCHEMA,
                              stricter=_unprintable_item_id)


@FUZZ
@given(arbitrary_bytes)
def test_fuzz_arbitrary_bytes_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    assert_only_invalid_event(parse_item, raw)
