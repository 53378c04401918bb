"""``streamrec trainer``: retrain on the live log and promote better models. Thin: read
settings, build the trainer, run one round (``--once``) or rounds until stopped."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from services.logs import configure
from services.settings import load_settings

app = typer.Typer()
console = Console(stderr=True)


def stop_after_the_round(stop: threading.Event, say: Callable[[str], None]
                         ) -> Callable[[int, FrameType | None], None]:
    """A signal handler that lets the round in progress finish, says so, and hands the
    signal back to Python's default: a round lasts up to the demo's 20 minutes, and
    Ctrl-C went unanswered through it, again and again, until a SIGKILL."""
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)
        say("trainer: stopping after the round in progress (Ctrl-C again to quit now)")

    return handler


@app.command()
def trainer(
    once: Annotated[bool, typer.Option(help="one round, then exit (1 if it failed)")] = False,
    interval_min: Annotated[float | None, typer.Option(
        min=0,
        help="minutes between rounds (default STREAMREC_TRAINER_INTERVAL_MIN; 0: off)")] = None,
    every_events: Annotated[int | None, typer.Option(
        min=0, help="a round after this many new events (default STREAMREC_TRAINER_EVERY_EVENTS; "
             "0: off)")] = None,
    min_gain: Annotated[float | None, typer.Option(
        min=0, help="relative full NDCG@10 gain a challenger needs (default "
             "STREAMREC_TRAINER_MIN_GAIN)")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="cap training epochs")] = None,
    refit_epochs: Annotated[int | None, typer.Option(
        min=0, help="epochs a challenger that passed the gate fine-tunes on every event, the gate "
             "slice included (default STREAMREC_TRAINER_REFIT_EPOCHS; 0: off)")] = None,
    status_file: Annotated[Path | None, typer.Option(
        help="keep the trainer's status here (JSON, streams.status.TrainerStatus): its "
             "state and its rounds' outcomes, for the program that started it")] = None,
) -> None:
    """Retrain on the interactions topic; promote the challenger when the gate is sure it
    beats the champion, fine-tuned on every event first."""
    from services.trainer import Trainer, describe_round

    overrides = {k: v for k, v in {"trainer_interval_min": interval_min,
                                   "trainer_every_events": every_events,
                                   "trainer_min_gain": min_gain,
                                   "trainer_epochs": epochs,
                                   "trainer_refit_epochs": refit_epochs}.items()
                 if v is not None}
    settings = load_settings(**overrides)
    if not once and not (settings.trainer_interval_min or settings.trainer_every_events):
        # Both triggers off: one round when there is no champion, then none ever.
        raise typer.BadParameter("with both the interval and the event count at 0 no round "
                                 "is ever due; set one (--interval-min, --every-events) or "
                                 "run --once")
    logs = configure(settings.log_format, "info", "trainer")
    service = Trainer(settings, status_file=status_file)
    if once:
        result = service.run_round()
        line = Text(describe_round(result))
        line.stylize("bold", 0, len(result.outcome))
        logs.say(console, line)
        if result.outcome == "failed":
            raise typer.Exit(1)
        return
    stop = threading.Event()
    handler = stop_after_the_round(stop, lambda line: logs.say(console, line))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    logs.say(console, f"trainer: a round every {settings.trainer_interval_min:g} min (0: off)"
             + (f" or {settings.trainer_every_events:,} new events"
                if settings.trainer_every_events else "")
             + f" on {settings.topic_interactions}; Ctrl-C to stop")
    service.run_forever(stop)
