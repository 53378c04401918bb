"""The property-based fuzz that test_events.py and test_catalog.py share, in one place.

An event (streams.events) and a catalogue record (streams.catalog) are both JSON objects
checked by a hand-written parser that also publishes a JSON Schema, and both are fuzzed
the same way: well-formed records round-trip, a record with one field dropped, retyped,
given a bad value or joined by an unexpected key gets the schema's verdict (a rejection
always names a reason), and arbitrary bytes raise nothing but InvalidEvent. The two test
files keep what differs (the record strategy, its bad values, the parser and the rules
stricter than the schema can say); the machinery lives here, so the fuzzes cannot drift
apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from streams.events import InvalidEvent, Reason

Record = dict[str, Any]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=3),
    max_leaves=8,
)
"""Any JSON value, nested a little: the retyped field, the unexpected key's value."""

arbitrary_bytes = st.binary(max_size=300) | json_values.map(orjson.dumps)
"""Raw input for a parser: noise, or well-formed JSON of any shape."""


def fuzz_settings(max_examples: int) -> settings:
    """The fuzz settings: no deadline, no health checks; each file sets its own budget."""
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=list(HealthCheck))


def mutated(well_formed: st.SearchStrategy[Record], bad: Mapping[str, Any], *,
            only_present: bool) -> st.SearchStrategy[Record]:
    """A well-formed record with one field removed, retyped, or given its value in ``bad``,
    or with an unexpected key added. The field is drawn from those the record has
    (``only_present``) or from every field in ``bad``, present or not."""

    @st.composite
    def strategy(draw: st.DrawFn) -> Record:
        record = draw(well_formed)
        field = draw(st.sampled_from(sorted(record if only_present else bad) + ["unexpected"]))
        action = draw(st.sampled_from(["drop", "retype", "bad"]))
        if field == "unexpected":
            record["unexpected"] = draw(json_values)
        elif action == "drop":
            record.pop(field, None)
        elif action == "retype":
            record[field] = draw(json_values)
        else:
            record[field] = bad[field]
        return record

    return strategy()


def assert_agrees_with_schema(check: Callable[[Record], object], obj: Record,
                              schema: jsonschema.Draft202012Validator,
                              stricter: Callable[[Record], bool]) -> None:
    """``check`` accepts ``obj`` only if the schema does, and a rejection carries a reason
    and a detail; where the schema accepts what ``check`` rejects, ``stricter`` (the rules
    the schema cannot say, as documented in json_schema()) must hold."""
    try:
        check(obj)
        accepted = True
    except InvalidEvent as exc:
        assert isinstance(exc.reason, Reason) and exc.detail
        accepted = False
    if accepted:
        assert schema.is_valid(obj)
    elif schema.is_valid(obj):
        assert stricter(obj), obj


def assert_only_invalid_event(parse: Callable[[bytes], object], raw: bytes) -> None:
    """``parse`` either accepts ``raw`` or raises InvalidEvent with a known reason."""
    try:
        parse(raw)
    except InvalidEvent as exc:
        assert exc.reason in Reason
