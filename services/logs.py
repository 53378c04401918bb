"""How every streamrec process logs, set up here once: ``configure`` at the top of each
entry point (worker, trainer, API).

``STREAMREC_LOG_FORMAT=text`` (the default) keeps each process's usual lines for people;
``json`` writes one JSON object per line to stderr for a log shipper: ``ts``, ``level``,
``logger``, ``message``, ``process``, and where known ``worker_id``, ``partition`` and
``model_version`` (``streams.log_context``), plus ``exc_info`` with a traceback. In both
formats, URLs in a message or a traceback lose their passwords (``infra.urls.mask_url``)
as the record is made, whoever logged them and whichever handler writes it. Faust's worker and uvicorn set logging up again when they start: they are handed
the same configuration.
"""

from __future__ import annotations

import logging
import logging.config
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter
from rich.console import Console
from rich.text import Text

from infra.urls import mask_urls
from streams.log_context import LogContext

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
# Libraries whose chatter is not worth its cost, and the level below which it goes.
_QUIET_BELOW_DEBUG = ("mlflow", "alembic", "urllib3")
_QUIET_BELOW_INFO = ("aiokafka", "faust", "mode")  # their INFO costs worker throughput


class JsonLines(OrjsonFormatter):
    """One JSON object per record, with streamrec's field names; URLs masked."""

    def __init__(self, static_fields: dict[str, str] | None = None) -> None:
        super().__init__(["levelname", "name", "message"], timestamp="ts",
                         rename_fields={"levelname": "level", "name": "logger"},
                         static_fields=static_fields,
                         reserved_attrs=[*RESERVED_ATTRS, "color_message"])  # uvicorn's ANSI twin

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """The traceback, masked: this formatter formats it again rather than reuse the
        record's masked ``exc_text``."""
        return mask_urls(super().formatException(ei))

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Puts ``ts`` first, where a reader looks for it."""
        return {"ts": log_data.pop("ts"), **log_data}


def masked_records(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A record factory that masks URLs in the message and traceback once, at creation:
    Faust and uvicorn install handlers of their own, so a filter on ours would miss them.
    Only records at an enabled level are made, so the hot path pays nothing."""
    def masked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: logging reports it when it emits,
            return record  # as without this factory, rather than raise into the caller
        if "://" in message:
            record.msg, record.args = mask_urls(message), ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = mask_urls(logging.Formatter().formatException(record.exc_info))
        return record

    masked.masks_urls = True  # type: ignore[attr-defined]
    return masked


class LogLevel(StrEnum):
    """The levels ``--log-level`` takes: names that logging, Faust and uvicorn all read."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass(frozen=True)
class Logs:
    """What ``configure`` set up. ``config``: the ``dictConfig`` to hand a framework that
    sets logging up itself (Faust's worker, uvicorn); None in text mode, where each
    keeps its own format."""

    process: str
    config: dict[str, Any] | None

    def say(self, console: Console, text: str | Text, level: int = logging.INFO) -> None:
        """An entry point's line for the operator (what started, on what): printed in text
        mode, a record of logger ``streamrec.<process>`` in JSON mode, whatever the level
        asked for the rest."""
        if self.config is None:
            console.print(text, soft_wrap=True, highlight=False)
        else:
            logging.getLogger(f"streamrec.{self.process}").log(level, str(text))


def configure(fmt: LogFormat, level: str, process: str, worker_id: str | None = None
              ) -> Logs:
    """Set up the root logger for ``fmt`` at ``level`` (a ``LogLevel``) and
    quiet the chatty libraries. ``worker_id`` goes on every JSON line of a worker."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "masks_urls", False):
        logging.setLogRecordFactory(masked_records(factory))
    if fmt == "json":
        config: dict[str, Any] | None = json_config(level, process, worker_id)
        logging.config.dictConfig(config)
    else:
        config = None
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
    _quiet(logging.getLevelName(level.upper()))
    return Logs(process, config)


def json_config(level: str, process: str, worker_id: str | None = None) -> dict[str, Any]:
    """The ``dictConfig`` of JSON mode: one stderr handler on the root logger, with the
    stream context added to each record; ``streamrec.<process>`` says its lines at info."""
    static = {"process": process} | ({"worker_id": worker_id} if worker_id else {})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": LogContext}},
        "formatters": {"json": {"()": JsonLines, "static_fields": static}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "json", "filters": ["context"]}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {f"streamrec.{process}": {"level": "INFO"}},
    }


# aiokafka retries every 0.1 s while a broker is away, and logs each failure: about 280
# lines a second per worker in a broker outage of ``make faults`` (issue #16).
_THROTTLED = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.fetcher",
              "aiokafka.consumer.group_coordinator", "aiokafka.consumer.consumer",
              "aiokafka.producer.sender", "aiokafka.producer.producer")
THROTTLE_EVERY_S = 10.0


class Throttle(logging.Filter):
    """Lets a logger's message through once per ``every_s`` (by its template, whatever its
    arguments); the next one that passes says how many were held back meanwhile."""

    def __init__(self, every_s: float = THROTTLE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}  # (passed at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        now, key = self.clock(), (record.name, record.msg)
        passed, held = self._seen.get(key, (float("-inf"), 0))
        if now - passed < self.every_s:
            self._seen[key] = (passed, held + 1)
            return False
        if held and isinstance(record.msg, str):
            record.msg = f"{record.msg} ({held} more like it held back)"
        self._seen[key] = (now, 0)
        return True


def _quiet(level: int) -> None:
    if level > logging.DEBUG:
        for name in _QUIET_BELOW_DEBUG:
            logging.getLogger(name).setLevel(logging.WARNING)
    if level > logging.INFO:
        for name in _QUIET_BELOW_INFO:
            logging.getLogger(name).setLevel(logging.WARNING)
    # Warns on every micro-batch while a worker catches up on a backlog (Faust's send
    # buffer holds 100 changelog writes): normal back-pressure, not a fault.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    # At DEBUG it logs every request it sends, a SASL PLAIN login's password among them
    # (``SaslAuthenticateRequest(sasl_auth_bytes=b'\x00user\x00password')``): never.
    logging.getLogger("aiokafka.conn").setLevel(max(level, logging.INFO))
    throttle = Throttle()
    for name in _THROTTLED:
        logger = logging.getLogger(name)  # the module's own, before or after its import
        if not any(isinstance(f, Throttle) for f in logger.filters):
            logger.addFilter(throttle)
