"""What a log line knows of the stream beyond its logger: the partition of the event
being processed and the model version served. ``LogContext`` (a ``logging.Filter``, put
on the handler by ``services.logs``) adds them to every record, when known.

The worker feeds them without formatting anything: ``in_partition`` once per event (one
context variable set, so a line logged while an event is processed names that event's
partition; batch-level lines name the batch's last one), ``serving`` once per model swap.
The version is process-wide rather than a context variable: the swap happens in a task of
its own, and a context variable set there would stay there.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

_partition: ContextVar[int | None] = ContextVar("streamrec_partition", default=None)
_served: dict[str, str] = {}  # {"model_version": ...} once a bundle is served


def in_partition(partition: int) -> None:
    """Lines logged from here on in this task are about an event of ``partition``."""
    _partition.set(partition)


def serving(version: str) -> None:
    """Lines logged from here on in this process are by a worker serving ``version``."""
    _served["model_version"] = version


class LogContext(logging.Filter):
    """Adds ``partition`` and ``model_version`` to each record where they are known."""

    def filter(self, record: logging.LogRecord) -> bool:
        partition = _partition.get()
        if partition is not None:
            record.partition = partition
        record.__dict__.update(_served)
        return True
