"""The ``streamrec`` command: one typer app; each group of commands lives in its own module."""

from __future__ import annotations

import sys

import typer
from confluent_kafka import KafkaException
from redis import RedisError
from rich.console import Console
from rich.markup import escape

from infra.errors import StackError
from infra.urls import mask_urls
from services import (
    cli_api,
    cli_catalog,
    cli_demo,
    cli_dlq,
    cli_events,
    cli_experiment,
    cli_models,
    cli_stack,
    cli_trainer,
    cli_worker,
)
from streams.catalog_files import CatalogFileError
from streams.producer import NotDelivered
from streams.readers import LogFileError

app = typer.Typer(
    help="streamrec: event-driven next-item recommendations on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings wrap as paragraphs; ``code`` shows as code
)
app.add_typer(cli_stack.app, name="stack")
app.add_typer(cli_dlq.app, name="dlq")
app.add_typer(cli_catalog.app, name="catalog")
app.add_typer(cli_experiment.app, name="experiment")
app.registered_commands += cli_events.app.registered_commands
app.registered_commands += cli_models.app.registered_commands
app.registered_commands += cli_worker.app.registered_commands
app.registered_commands += cli_trainer.app.registered_commands
app.registered_commands += cli_api.app.registered_commands
app.registered_commands += cli_demo.app.registered_commands


def user_facing(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure a user acts on from one line: a bad setting or file, a
    service that is down or refuses. Anything else is a bug and keeps its traceback."""
    if isinstance(exc, (StackError, OSError, KafkaException, RedisError, LogFileError,
                        CatalogFileError, NotDelivered)):
        return True
    mlflow = sys.modules.get("mlflow.exceptions")  # imported only by the commands that use it
    return mlflow is not None and isinstance(exc, mlflow.MlflowException)


def main() -> None:
    """Console entry point: user-facing failures print one line (URLs masked) and exit 1."""
    try:
        app()
    except Exception as exc:
        if not user_facing(exc):
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {escape(mask_urls(str(exc)))}",
                                   highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
