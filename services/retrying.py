"""Retrying a call to a service that may be away a while (the registry, Kafka, Redis):
the trainer's steps and its live trials retry each call alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry(what: str, call: Callable[[], T], attempts: int = 5, delay_s: float = 1.0) -> T:
    """``call()``, retried with exponential backoff; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any hiccup is worth another try
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d of %d), retrying in %.0f s: %s", what, attempt,
                        attempts, delay_s, exc)
            time.sleep(delay_s)
            delay_s *= 2
    raise AssertionError("unreachable")
