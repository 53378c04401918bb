"""The item catalogue record: declared once, used by loaders, the API, the stream workers
and the model's content features.

Wire format: one JSON object per Kafka record (orjson) on the compacted ``items`` topic,
key = ``item_id``, so the newest record of an item is the one compaction keeps. The JSON
Schema in ``streams/schema/item-v1.json`` describes the same rules for other languages; a
test keeps the two in step. A null value on that topic (a tombstone) is not a record:
consumers handle it before :func:`parse_item`, which refuses it as ``empty_record``.

Every field but ``item_id`` is optional: ``{"item_id": "4", "categories": ["a1", "a2"]}``
is a valid record, and a field given as ``null`` counts as absent. ``schema_version``
defaults to 1; a version this code does not know is rejected (it goes to the dead-letter
topic), never guessed at, and so is a field it does not know. Rejections reuse the events'
:class:`~streams.events.InvalidEvent` and :class:`~streams.events.Reason`, so dead
letters of both kinds read alike.

Validation is hand-written, like the event's, and follows the same id rule as the event's
``item_id`` (1..256 printable characters), so every valid catalogue id can also be an
event's item.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.events import (
    CONTROL_CHARACTERS,
    MAX_ID_LENGTH,
    NO_CONTROL,
    InvalidEvent,
    Reason,
    decode_record,
    json_integer,
)

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_RECORD_BYTES = 256 * 1024  # an outer bound: the field limits below are the real ones
MAX_TITLE_LENGTH = 1024
MAX_TEXT_LENGTH = 8192
MAX_CATEGORIES = 64
MAX_NAME_LENGTH = MAX_ID_LENGTH  # a category or a brand
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_URL_LENGTH = 2048
MAX_INTEGER = 2**63 - 1  # what a JSON integer may be on the wire (orjson, Java, ...)

OPTIONAL = ("title", "text", "categories", "brand", "price", "attributes", "image_url",
            "schema_version")
_KNOWN = frozenset(("item_id", *OPTIONAL))
# Names (title, brand, categories, attribute keys) are one line: no control characters.
_NO_CONTROL = re.compile(f"[^{CONTROL_CHARACTERS}]*")
_URL = re.compile(r"https?://[!-~]+")  # printable ASCII: non-ASCII is percent-encoded


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """What the catalogue says of one item. Build it with :func:`parse_item` (which
    validates); treat ``attributes`` as read-only.

    ``attributes``: numeric attributes besides ``price``, e.g. ``{"year": 1995}``.
    """

    item_id: str
    title: str | None = None
    text: str | None = None
    categories: tuple[str, ...] = ()
    brand: str | None = None
    price: float | None = None
    attributes: Mapping[str, float] = field(default_factory=dict)
    image_url: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka key: the item id."""
        return self.item_id.encode()

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``item_id``, the fields that are set, and ``schema_version``."""
        out: dict[str, Any] = {"item_id": self.item_id}
        if self.title is not None:
            out["title"] = self.title
        if self.text is not None:
            out["text"] = self.text
        if self.categories:
            out["categories"] = list(self.categories)
        if self.brand is not None:
            out["brand"] = self.brand
        if self.price is not None:
            out["price"] = self.price
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.image_url is not None:
            out["image_url"] = self.image_url
        out["schema_version"] = self.schema_version
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def parse_keyed_item(key: bytes | None, value: bytes) -> ItemRecord:
    """A record read from the items topic: ``parse_item``, and its Kafka key must be its
    item id. Compaction keeps a record under its key, so one keyed as another item could
    never be removed by its own item's tombstone, and came back at every read."""
    record = parse_item(value)
    if key is not None and key != record.key:
        raise InvalidEvent(Reason.WRONG_KEY, f"keyed {key[:64]!r}, for item "
                                             f"{record.item_id[:64]!r}")
    return record


def parse_item(raw: bytes | str | dict[str, Any] | None) -> ItemRecord:
    """Wire bytes (or text, or an already decoded object) to an ItemRecord, or
    InvalidEvent naming the first problem found."""
    if raw is not None and not isinstance(raw, (bytes, str)):
        return _validate(raw)  # an object already decoded (anything else: not_an_object)
    return _validate(decode_record(raw.encode() if isinstance(raw, str) else raw,
                                   MAX_RECORD_BYTES))


def _validate(obj: Any) -> ItemRecord:
    if type(obj) is not dict:
        raise InvalidEvent(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    if "item_id" not in obj:
        raise InvalidEvent(Reason.MISSING_FIELD, "item_id is required")
    version = obj.get("schema_version")
    if version is None:
        version = SCHEMA_VERSION
    elif (version := json_integer(version)) is None:
        raise InvalidEvent(Reason.WRONG_TYPE, "schema_version must be an integer")
    elif version not in SUPPORTED_VERSIONS:
        raise InvalidEvent(Reason.UNKNOWN_SCHEMA_VERSION,
                           f"schema_version {version} is not one of {sorted(SUPPORTED_VERSIONS)}")
    if not obj.keys() <= _KNOWN:  # after the version: a newer one's fields are not unknown
        raise InvalidEvent(Reason.UNKNOWN_FIELD, f"unknown fields {sorted(obj.keys() - _KNOWN)}")
    item_id = obj["item_id"]
    if type(item_id) is not str:
        raise InvalidEvent(Reason.WRONG_TYPE, f"item_id must be a string, got {type(item_id).__name__}")
    if not 0 < len(item_id) <= MAX_ID_LENGTH or not item_id.isprintable():
        raise InvalidEvent(Reason.BAD_VALUE, f"item_id must be 1..{MAX_ID_LENGTH} printable characters")
    get = obj.get
    title, brand = _name("title", get("title"), MAX_TITLE_LENGTH), _name("brand", get("brand"))
    text = get("text")
    if text is not None:
        if type(text) is not str:
            raise InvalidEvent(Reason.WRONG_TYPE, "text must be a string")
        if not 0 < len(text) <= MAX_TEXT_LENGTH:
            raise InvalidEvent(Reason.BAD_VALUE, f"text must be 1..{MAX_TEXT_LENGTH} characters")
    price = get("price")
    if price is not None:
        _number("price", price)
        if price < 0:
            raise InvalidEvent(Reason.BAD_VALUE, f"price must be >= 0, got {price}")
    image_url = get("image_url")
    if image_url is not None:
        if type(image_url) is not str:
            raise InvalidEvent(Reason.WRONG_TYPE, "image_url must be a string")
        if len(image_url) > MAX_URL_LENGTH or _URL.fullmatch(image_url) is None:
            raise InvalidEvent(Reason.BAD_VALUE, "image_url must be an http(s) URL without "
                               f"spaces, at most {MAX_URL_LENGTH} characters")
    return ItemRecord(item_id, title, text, _categories(get("categories")), brand, price,
                      _attributes(get("attributes")), image_url, version)


def _name(field_name: str, value: Any, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """A one-line string (title, brand, category, attribute key), or None when absent."""
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidEvent(Reason.WRONG_TYPE, f"{field_name} must be a string")
    if not 0 < len(value) <= max_length or _NO_CONTROL.fullmatch(value) is None:
        raise InvalidEvent(Reason.BAD_VALUE, f"{field_name} must be 1..{max_length} "
                           "characters without control characters (line breaks, tabs)")
    return value


def _number(field_name: str, value: Any) -> None:
    """A JSON number within 64 bits (±2^63), finite; never a boolean. A float too: orjson
    reads an integer from 2^64 up as one, so the bound on integers alone refused 2^63 and
    took 2^64, and the topic carries the digits as written."""
    if type(value) not in (int, float):
        raise InvalidEvent(Reason.WRONG_TYPE, f"{field_name} must be a number")
    if type(value) is float and not math.isfinite(value):
        raise InvalidEvent(Reason.BAD_VALUE, f"{field_name} must be a finite number")
    if not -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        raise InvalidEvent(Reason.BAD_VALUE, f"{field_name} is a number past 64 bits (±2^63)")


def _categories(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list and type(value) is not tuple:
        raise InvalidEvent(Reason.WRONG_TYPE, "categories must be an array of strings")
    if len(value) > MAX_CATEGORIES:
        raise InvalidEvent(Reason.BAD_VALUE, f"more than {MAX_CATEGORIES} categories")
    if any(type(c) is not str for c in value):
        raise InvalidEvent(Reason.WRONG_TYPE, "categories must be an array of strings")
    for category in value:
        _name("categories[]", category)
    if len(set(value)) != len(value):
        raise InvalidEvent(Reason.BAD_VALUE, "categories has duplicates")
    return tuple(value)


def _attributes(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidEvent(Reason.WRONG_TYPE, "attributes must be an object of numbers")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidEvent(Reason.BAD_VALUE, f"attributes has more than {MAX_ATTRIBUTES} keys")
    for key, number in value.items():
        _name("attributes keys", key, MAX_ATTRIBUTE_KEY_LENGTH)
        if key == "price":
            raise InvalidEvent(Reason.BAD_VALUE, "price has a field of its own, not an attribute")
        _number(f"attributes[{key[:40]!r}]", number)
    return dict(value)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the wire format, for other languages and docs.

    Two rules are not expressible there and live only in :func:`parse_item`: the payload
    size limit, and ``item_id`` being printable past the control characters the pattern
    refuses (as an event's).
    """
    within_64_bits = {"minimum": -MAX_INTEGER - 1, "exclusiveMaximum": MAX_INTEGER + 1}

    def name(max_length: int = MAX_NAME_LENGTH) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": max_length, **NO_CONTROL}

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [schema, {"type": "null"}]}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://streamrec.dev/schema/item-v1.json",
        "title": "streamrec catalogue record",
        "description": "One item of the catalogue, on the compacted items topic keyed by "
                       "item_id; a field given as null counts as absent.",
        "type": "object",
        "additionalProperties": False,
        "required": ["item_id"],
        "properties": {
            "item_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH,
                        **NO_CONTROL,
                        "description": "printable characters, as an event's item_id"},
            "title": nullable(name(MAX_TITLE_LENGTH)),
            "text": nullable({"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH}),
            "categories": nullable({"type": "array", "items": name(),
                                    "maxItems": MAX_CATEGORIES, "uniqueItems": True}),
            "brand": nullable(name()),
            "price": nullable({"type": "number", "minimum": 0,
                               "exclusiveMaximum": MAX_INTEGER + 1}),
            "attributes": nullable({
                "type": "object", "maxProperties": MAX_ATTRIBUTES,
                "propertyNames": {"allOf": [name(MAX_ATTRIBUTE_KEY_LENGTH),
                                            {"not": {"const": "price"}}]},
                "additionalProperties": {"type": "number", **within_64_bits},
                "description": "numeric attributes besides price, e.g. {\"year\": 1995}"}),
            "image_url": nullable({"type": "string", "maxLength": MAX_URL_LENGTH,
                                   "pattern": "^https?://[!-~]",
                                   "not": {"pattern": "[^!-~]"}}),  # printable ASCII
            "schema_version": nullable({"const": SCHEMA_VERSION, "default": SCHEMA_VERSION}),
        },
    }
