"""The wire messages besides the event, each declared once: producers and consumers alike
import these classes, and ``streams/schema/`` publishes their JSON Schemas (generated from
the classes; a test keeps the files in step) for consumers written in other languages.

- ``RecommendationList``: what a worker publishes for each answered event, on the
  ``recommendations`` topic (key = user id), in Redis under ``recs:{user}`` and on the
  lists channel; the API answers reads with the same record.
- ``PopularList``: a worker's recent popularity, stored in Redis about once a second.
- ``ModelAnnouncement``: a new champion, on ``model-updates`` (key = the alias).
- ``Experiment`` (declared in ``streams.experiment``): an experiment between live models,
  on the compacted ``experiments`` topic (key = its name).

They are plain dataclasses rather than pydantic models because a list is built per event
on the worker's hot path and read per request on the API's: ``orjson`` serializes them
natively. Treat them as immutable; the list classes are neither frozen nor slotted on
purpose (measured with 10 items: orjson took ~6 µs for slotted classes against ~1.2 µs
for plain ones, and building frozen ones cost twice the ~2.3 µs of plain ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from math import floor
from typing import Any, Literal

import orjson

from streams.experiment import Experiment

Path = Literal["model", "popularity", "fallback"]
CHAMPION = "champion"  # the registry alias the workers serve, named in announcements
NO_MODEL = "none"  # the model version of lists served before any champion exists
# What a record that is not the schema's raises on parsing (orjson's error is a ValueError).
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


SCORE_SCALE = 1e6  # scores travel rounded to 6 decimals: more digits are noise, and bytes


def wire_score(score: float) -> float:
    """``score`` rounded to 6 decimals for the wire. Arithmetic rather than ``round(x, 6)``,
    which formats the number through decimal digits: a model list's 30 scores (items and
    two heads) took 12 µs of ``round`` per list, a tenth of the pass-through worker's
    per-event budget. The division by an exact power of ten gives the double nearest the
    rounded decimal, so the JSON stays short. Only finite scores reach the wire."""
    return floor(float(score) * SCORE_SCALE + 0.5) / SCORE_SCALE


def version_string(versions: Mapping[str, str]) -> str:
    """The one printable form of a set of registry versions: ``name:vN+name:vN``."""
    return "+".join(f"{name}:v{v}" for name, v in versions.items())


@dataclass
class ScoredItem:
    """An item and its served score (the list's order: where a ranker keeps the
    retriever's order among items the user has not met, those take its scores in that
    order); ``heads``: the item's own ranker logit per task when a multi-task ranker
    served it (``next``: the next interaction is this item; ``conversion``: that
    interaction converts, given it is this item); ``path``, in a model list: ``model`` (an
    item the models trained on), ``content`` (a catalogue item known by its content alone,
    not yet trained on) or ``popularity`` (recent popularity, filling a slot the model
    left empty)."""

    item_id: str
    score: float
    heads: dict[str, float] | None = None
    path: str | None = None


@dataclass
class Reason:
    """A session item that drove a list, with its attention weight (0..1)."""

    item_id: str
    weight: float


@dataclass
class ExperimentTag:
    """The experiment a list was served in (``streams.experiment``): ``variant`` is the
    user's arm (``interleaved`` for a team-draft list, whose ``teams`` name the variant
    that placed each item); ``served_by`` names the variant whose model actually served
    it when the user's own could not be loaded (the control, else ``champion``), or
    ``popularity`` when the user's own failed on the batch."""

    experiment: str
    variant: str
    served_by: str | None = None
    teams: list[str] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ExperimentTag | None:
        if d is None:
            return None
        return cls(d["experiment"], d["variant"], d.get("served_by"), d.get("teams"))


def _items(raw: list[dict[str, Any]]) -> list[ScoredItem]:
    if not isinstance(raw, list):
        raise ValueError(f"items must be a list. Received: {type(raw).__name__}")
    return [ScoredItem(_text(i, "item_id"), _number(i, "score"), i.get("heads"), i.get("path"))
            for i in raw]


# A list read back (the channel, Redis) is checked field by field where readers compare or
# format its values: a time written as a string was kept, and then every newer list for
# its user raised in ``older_than`` and was dropped, or every read of it was a 500.
def _text(d: dict[str, Any], key: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string. Received: {type(value).__name__}")
    return value


def _number(d: dict[str, Any], key: str) -> float:
    """A number, or None: orjson writes a NaN score as null, which readers pass over."""
    value = d[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{key} must be a number. Received: {type(value).__name__}")
    return value


def _int(d: dict[str, Any], key: str) -> int:
    value = _optional_int(d, key)
    if value is None:
        raise ValueError(f"{key} must be an integer. Received: null")
    return value


def _optional_int(d: dict[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key} must be an integer or null. Received: {type(value).__name__}")
    return value


def sent_before(sent_us: int | None, other_us: int | None) -> bool:
    """Whether an event sent at ``sent_us`` was sent before one at ``other_us`` (either
    unknown: not said to be)."""
    return sent_us is not None and other_us is not None and sent_us < other_us


def shows_over(items: Sequence[Any], shown: Sequence[Any] | None) -> bool:
    """Whether a list of ``items`` is shown over one showing ``shown`` (None: none shown):
    an empty list (a fresh worker's popularity) never over one with items."""
    return bool(items) or shown is None or not shown


@dataclass
class RecommendationList:
    """A user's list. ``path``: ``model`` (the workers' list for this session),
    ``popularity`` (the user has no list yet, or no item the model knows: recent
    popularity), ``fallback`` (the API could not reach Redis: the popularity it last saw).
    ``event_id`` / ``event_item_id``: the event whose arrival produced the list and its item;
    ``sent_us``: that event's send time (its ``sent_us`` header, else its record's Kafka timestamp);
    ``published_us``: when the list was computed. Times are epoch microseconds.
    ``because``: the session items that drove a model list most (the encoder's last
    attention block at the newest event), strongest first. ``experiment``: the experiment
    and variant the list was served in, None outside any."""

    user_id: str
    path: Path
    model_version: str | None
    items: list[ScoredItem]
    event_id: str | None = None
    event_item_id: str | None = None
    sent_us: int | None = None
    published_us: int | None = None
    because: list[Reason] | None = None
    experiment: ExperimentTag | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    def older_than(self, other: RecommendationList | None) -> bool:
        """Whether this list answers an event sent before ``other``'s (both stamped with
        ``sent_us``). A worker that takes over a partition answers its redelivered events
        again, after their users' newer ones: whoever shows one list per user keeps the
        newer (a feed went back in time 167 times in a ``make faults`` history check)."""
        return other is not None and sent_before(self.sent_us, other.sent_us)

    def may_replace(self, shown: RecommendationList | None) -> bool:
        """Whether a reader showing ``shown`` shows this list instead: not when it answers
        an older event (:meth:`older_than`), nor when it is empty and ``shown`` is not. A
        fresh worker's first popularity lists are empty; the store keeps a user's list
        over one (``NX``), and every copy of it must too, or the API served them nothing."""
        return not self.older_than(shown) and shows_over(
            self.items, None if shown is None else shown.items)

    def head(self, k: int) -> RecommendationList:
        """The same list cut to its first ``k`` items (an interleaved list's teams alike:
        they said who placed items the reader never got)."""
        if len(self.items) <= k:
            return self
        tag = self.experiment
        if tag is not None and tag.teams is not None:
            tag = replace(tag, teams=tag.teams[:k])
        return RecommendationList(self.user_id, self.path, self.model_version, self.items[:k],
                                  self.event_id, self.event_item_id, self.sent_us,
                                  self.published_us, self.because, tag)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecommendationList:
        because = d.get("because")
        return cls(_text(d, "user_id"), _text(d, "path"), d.get("model_version"),
                   _items(d["items"]), d.get("event_id"), d.get("event_item_id"),
                   _optional_int(d, "sent_us"), _optional_int(d, "published_us"),
                   [Reason(r["item_id"], r["weight"]) for r in because] if because else None,
                   ExperimentTag.from_dict(d.get("experiment")))

    @classmethod
    def from_json(cls, raw: bytes | str) -> RecommendationList:
        return cls.from_dict(orjson.loads(raw))


@dataclass
class PopularList:
    """A worker's recently popular items, and the model it was serving then; ``newest_ms``:
    the event time of the newest event counted (a fresh worker starting from this record
    fades it by event time, and skips it when it counted events later than its own)."""

    model_version: str | None
    computed_us: int
    items: list[ScoredItem]
    newest_ms: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    def as_list(self, user_id: str, k: int, path: Path) -> RecommendationList:
        """This popularity served as ``user_id``'s list (no event behind it)."""
        return RecommendationList(user_id, path, self.model_version, self.items[:k],
                                  published_us=self.computed_us)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PopularList:
        d = orjson.loads(raw)
        return cls(d.get("model_version"), _int(d, "computed_us"), _items(d["items"]),
                   _optional_int(d, "newest_ms"))


@dataclass(frozen=True)
class ModelAnnouncement:
    """The ``alias`` (``champion``) now names ``versions`` ({registered name: version}) in
    the registry at ``tracking_uri`` (for people to read: its password is masked, as the
    topic has many readers; workers load from their own configured registry)."""

    alias: str
    versions: dict[str, str]
    tracking_uri: str

    @property
    def version(self) -> str:
        return version_string(self.versions)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ModelAnnouncement:
        """Raises ``ValueError`` for anything that is not an announcement."""
        try:
            d = orjson.loads(raw)
            return cls(str(d["alias"]), {str(k): str(v) for k, v in d["versions"].items()},
                       str(d["tracking_uri"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a model announcement: {exc}") from None


# The published schema files under ``streams/schema/``, and the class each describes.
SCHEMAS: dict[str, type] = {"recommendation-list-v1.json": RecommendationList,
                            "popular-list-v1.json": PopularList,
                            "model-announcement-v1.json": ModelAnnouncement,
                            "experiment-v1.json": Experiment}


def json_schema(file: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) published as ``streams/schema/<file>``, generated
    from its class."""
    from pydantic import TypeAdapter

    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://streamrec.dev/schema/{file}",
            **TypeAdapter(SCHEMAS[file]).json_schema()}
