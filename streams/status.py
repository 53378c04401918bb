"""Process status records: how a worker or the trainer tells whoever started it (the demo,
the tests, the benchmarks) what state it is in, instead of log lines that others grep.

A process started with ``--status-file PATH`` rewrites PATH on every change, atomically
(write a sibling, then rename), as the JSON of one record below; ``read_status`` reads it
back typed. Without ``--status-file`` nothing is written. Operators watch the same facts
as Prometheus metrics (``streams.metrics``) and logs; these records are for programs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

log = logging.getLogger(__name__)

# "trial": the gate passed and the challenger went live against the champion in an
# experiment (``trainer_promotion=experiment``), or such a trial is still undecided.
Outcome = Literal["promoted", "rejected", "skipped", "failed", "trial"]


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """One training round: ``outcome`` and why, the challenger's registered versions."""

    outcome: Outcome
    reason: str
    versions: dict[str, str] = field(default_factory=dict)
    events: int = 0


@dataclass(frozen=True, slots=True)
class TrainerStatus:
    """``ready``: the trainer waits for its next trigger (its first round, when no champion
    existed, has run); ``training``: a round is under way. ``rounds`` counts finished rounds
    since start; ``last_round`` is the newest."""

    state: Literal["starting", "ready", "training"] = "starting"
    rounds: int = 0
    last_round: RoundSummary | None = None
    updated_us: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """The model a worker serves and the swaps it has made or refused since start."""

    model_version: str
    swaps_applied: int = 0
    swaps_failed: int = 0
    last_error: str | None = None
    updated_us: int = 0


Record = TypeVar("Record", TrainerStatus, WorkerStatus)


class StatusFile:
    """Holds a process's current record and writes it on each ``update``. A write that
    fails (a full disk, its folder removed) is logged and the process goes on: the file
    only reports, and an error raised from a worker's swap ended the worker."""

    def __init__(self, path: Path | None, initial: Any) -> None:
        self.path, self.current = path, initial
        self._write()

    def update(self, **changes: Any) -> None:
        self.current = replace(self.current, **changes, updated_us=now_us())
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.current))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("status file %s not written: %s", self.path, exc)


def read_status(path: Path, kind: type[Record]) -> Record | None:
    """The record at ``path``, or None before the process has written one."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if kind is TrainerStatus and data.get("last_round") is not None:
        data["last_round"] = RoundSummary(**data["last_round"])
    return kind(**{f.name: data[f.name] for f in fields(kind) if f.name in data})
