"""An experiment between live models, declared once.

Wire format: one JSON object per Kafka record on the compacted ``experiments`` topic,
key = the experiment's name, so the newest declaration of each experiment is the one
compaction keeps and every worker reads the whole set at start (``streams.experiments``).
``streams/schema/experiment-v1.json`` publishes its rules for other languages; those across
fields (``Experiment._consistent``) are stated in its description, not as constraints.

An experiment splits users between ``variants`` by a hash of the user id and the
experiment's ``salt`` (``model.experiments.bucketing``): the same user gets the same variant
in every worker and after every restart, and a new salt reshuffles everyone. The first
variant is the control: a user of a variant whose model cannot be loaded is served the
control's list (and the list says so). A ``holdback`` share of users stays out of the
experiment: they get the champion, untagged, uncounted.

``mode``: ``ab`` serves each user their variant's list; ``interleave`` (exactly two variants)
serves everyone a team-draft interleaving of both lists (Radlinski et al. 2008) and
credits the model whose item the user takes next.

A variant's ``model`` is a registry alias (``champion``, ``challenger``), a version string
(``streamrec-retriever:v3+streamrec-ranker:v2``, the form every list prints) or
``popularity`` (the worker's recent popularity).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from model.experiments.bucketing import SHARE_TOLERANCE, assign
from streams.events import NO_CONTROL

POPULARITY = "popularity"  # a variant served by recent popularity, not by a model
NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # an experiment's or a variant's name
MODEL_REF = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,255}$"

# ``NO_CONTROL`` beside each pattern: the published schema is read by ``re.search`` in
# Python's ``jsonschema``, whose ``$`` also matches before a final newline.
Name = Annotated[str, Field(pattern=NAME, json_schema_extra=NO_CONTROL)]


def _whole(value: object) -> object:
    """``1.0`` as ``1``: JSON Schema's integers include it, which a strict read refused."""
    return int(value) if type(value) is float and value.is_integer() else value


Whole = BeforeValidator(_whole)


class InvalidExperiment(ValueError):
    """A declaration that breaks a rule; the message is one line."""


class Variant(BaseModel):
    """One arm: its name, the model that serves it, and its share of the users."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    model: Annotated[str, Field(pattern=MODEL_REF, json_schema_extra=NO_CONTROL)]
    share: Annotated[float, Field(gt=0, le=1)]


class Experiment(BaseModel):
    """An experiment's declaration; ``state`` moves ``running`` -> ``stopped`` (lists are
    no longer tagged; the tallies stay readable) and ``winner`` is set by ``conclude``.
    Rules across fields, which a JSON Schema cannot state: variant names are distinct,
    the shares and the holdback add up to 1, interleaving has exactly two variants, and
    a winner names one of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    variants: Annotated[list[Variant], Field(min_length=2, max_length=8)]
    mode: Literal["ab", "interleave"] = "ab"
    salt: Annotated[str, Field(min_length=1, max_length=128)]
    holdback: Annotated[float, Field(ge=0, lt=1)] = 0.0
    state: Literal["running", "stopped"] = "running"
    started_us: Annotated[int, Whole]
    stopped_us: Annotated[int | None, Whole] = None
    winner: str | None = None
    schema_version: Annotated[Literal[1], Whole] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {', '.join(names)}")
        total = self.holdback + math.fsum(v.share for v in self.variants)
        if abs(total - 1) > SHARE_TOLERANCE:
            raise ValueError(f"the shares and the holdback add up to {total:.10g}, not 1")
        if self.mode == "interleave" and len(self.variants) != 2:
            raise ValueError("interleaving compares exactly two variants")
        if self.winner is not None and self.winner not in names:
            raise ValueError(f"the winner {self.winner!r} is not a variant")
        return self

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def variant_of(self, user_id: str) -> Variant | None:
        """The variant ``user_id`` is in; None for a user held back. In interleave mode
        every user sees both models, so the bucket only decides the holdback."""
        shares = [v.share for v in self.variants]
        index = assign(user_id, self.salt, [self.holdback, *shares] if self.holdback else shares)
        if self.holdback:
            index -= 1
        return None if index < 0 else self.variants[index]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def parse_experiment(raw: bytes | str) -> Experiment:
    """Wire bytes to an Experiment, or ``InvalidExperiment`` naming the first problem.
    Strict, as the published schema is: lax, ``"share": "0.5"`` was read as a number and
    ``"started_us": true`` as 1, declarations readers in other languages refuse."""
    try:
        return Experiment.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise InvalidExperiment(one_line(exc)) from None


def one_line(exc: ValidationError) -> str:
    """Pydantic's first error as one line: ``field: problem``."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = re.sub(r"^Value error, ", "", error["msg"])
    return f"{where}: {message}" if where else message
