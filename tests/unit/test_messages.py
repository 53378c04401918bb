"""The wire messages: published schemas match the classes, records round-trip, and what
the classes write validates against the published schemas (what a consumer in another
language would check)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from streams.messages import (
    SCHEMAS,
    ModelAnnouncement,
    PopularList,
    RecommendationList,
    ScoredItem,
    json_schema,
    version_string,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "streams" / "schema"
LIST = RecommendationList("u1", "model", "streamrec-retriever:v2+streamrec-ranker:v3",
                          [ScoredItem("i1", 2.5), ScoredItem("i2", 1.0)],
                          "0b7e6a4c-5f0e-4a55-9d8e-2f8a3c1d9e10", "i9", 1_700_000_000_000_000,
                          1_700_000_000_004_000)


def validator(file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / file).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("file", sorted(SCHEMAS))
def test_published_schemas_match_the_classes(file: str) -> None:
    assert json.loads((SCHEMA_DIR / file).read_text()) == json_schema(file), (
        f"regenerate streams/schema/{file} from streams.messages.json_schema({file!r})")


def test_a_list_round_trips_and_follows_its_schema() -> None:
    raw = LIST.to_json()
    assert RecommendationList.from_json(raw) == LIST
    validator("recommendation-list-v1.json").validate(json.loads(raw))


def test_the_schema_rejects_a_list_without_items_or_with_an_unknown_path() -> None:
    check = validator("recommendation-list-v1.json")
    good = json.loads(LIST.to_json())
    with pytest.raises(jsonschema.ValidationError):
        check.validate({k: v for k, v in good.items() if k != "items"})
    with pytest.raises(jsonschema.ValidationError):
        check.validate({**good, "path": "guess"})


def test_head_cuts_items_and_keeps_the_rest() -> None:
    cut = LIST.head(1)
    assert cut.items == [ScoredItem("i1", 2.5)] and cut.event_id == LIST.event_id
    assert LIST.head(10) is LIST


@pytest.mark.parametrize("field, value", [("sent_us", ""), ("published_us", "1795"),
                                          ("user_id", 7), ("items", {"a": 1}),
                                          ("sent_us", True)])
def test_a_list_read_back_with_a_field_of_the_wrong_type_is_unreadable(field: str,
                                                                       value: object) -> None:
    """Kept, a string time made every newer list of its user raise in ``older_than`` (and
    be dropped), or every read of it a 500 (a review)."""
    raw = {**json.loads(LIST.to_json()), field: value}
    with pytest.raises(ValueError, match=field):
        RecommendationList.from_dict(raw)
    bad_score = {**json.loads(LIST.to_json()), "items": [{"item_id": "a", "score": "1"}]}
    with pytest.raises(ValueError, match="score"):
        RecommendationList.from_dict(bad_score)
    with pytest.raises(ValueError, match="computed_us"):
        PopularList.from_json(b'{"computed_us": "5", "items": []}')


def test_popularity_served_as_a_list() -> None:
    popular = PopularList("v1", 123, [ScoredItem("a", 3.0), ScoredItem("b", 2.0)])
    assert PopularList.from_json(popular.to_json()) == popular
    validator("popular-list-v1.json").validate(json.loads(popular.to_json()))
    as_list = popular.as_list("u7", 1, "fallback")
    assert (as_list.user_id, as_list.path, as_list.items, as_list.published_us) == \
        ("u7", "fallback", [ScoredItem("a", 3.0)], 123)
    assert as_list.event_id is None


def test_announcement_round_trips_and_names_its_version() -> None:
    a = ModelAnnouncement("champion", {"streamrec-retriever": "4", "streamrec-ranker": "5"},
                          "sqlite:///x.db")
    assert ModelAnnouncement.from_json(a.to_json()) == a
    validator("model-announcement-v1.json").validate(json.loads(a.to_json()))
    assert a.version == "streamrec-retriever:v4+streamrec-ranker:v5"
    assert a.version == version_string(a.versions)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"alias": "champion"}',
                                 b'{"alias": "c", "versions": [1], "tracking_uri": "x"}'])
def test_anything_else_is_not_an_announcement(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a model announcement"):
        ModelAnnouncement.from_json(raw)


@pytest.mark.parametrize("field", ["name", "variant", "model"])
def test_the_experiment_schema_refuses_a_trailing_newline_as_the_declaration_does(
        field: str) -> None:
    """Python's ``re.search`` lets an anchored ``$`` match before a final newline, so the
    name patterns alone took ``"exp\\n"``, which the CLI and API refuse."""
    variants = [{"name": "control", "model": "champion", "share": 0.5},
                {"name": "treatment", "model": "challenger", "share": 0.5}]
    good = {"name": "exp", "variants": variants, "salt": "s", "started_us": 1}
    validator("experiment-v1.json").validate(good)
    bad = {**good, "variants": [{**variants[0]}, variants[1]]}
    if field == "name":
        bad["name"] = "exp\n"
    else:
        bad["variants"][0][field if field == "model" else "name"] += "\n"
    with pytest.raises(jsonschema.ValidationError):
        validator("experiment-v1.json").validate(bad)
