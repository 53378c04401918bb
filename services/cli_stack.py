"""``streamrec stack up | down | status | check``: the local Kafka, Redis and MLflow stack."""

from __future__ import annotations

import time
from dataclasses import replace

import typer
from rich.console import Console
from rich.table import Table

from infra.mlflow_store import wait_for_mlflow
from infra.smoke import kafka_round_trip, mlflow_round_trip, redis_round_trip
from infra.urls import mask_url
from services.settings import load_settings
from services.stack import build_stack, mlflow_store

app = typer.Typer(help="Run the local stack (Kafka, Redis, MLflow store).", no_args_is_help=True)
console = Console()


@app.command()
def up() -> None:
    """Start embedded Kafka and Redis when not configured externally; create topics."""
    settings = load_settings()
    stack = build_stack(settings)
    start = time.perf_counter()
    stack.up(say=lambda line: console.print(f"  {line}"))
    console.print(f"stack up ({time.perf_counter() - start:.1f} s): "
                  f"kafka {stack.kafka.bootstrap}, redis {mask_url(stack.redis_url)}, "
                  f"mlflow {mask_url(stack.mlflow.tracking_uri)}")


@app.command()
def down() -> None:
    """Stop the embedded Kafka and Redis under the data dir, also when the settings now
    point at external services (which are left alone)."""
    settings = load_settings()
    stack = replace(build_stack(settings), local_kafka=settings.local_kafka(),
                    local_redis=settings.local_redis())
    stopped = stack.down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Each component: address, pid, and whether it answers. Exit 1 when one does not."""
    rows = build_stack(load_settings()).status()
    table = Table("component", "address", "pid", "answers", "mode")
    for row in rows:
        table.add_row(row.name, row.address, str(row.pid or "-"),
                      "[green]yes[/]" if row.answers else "[red]no[/]",
                      "embedded" if row.managed else "external")
    console.print(table)
    if not all(row.answers for row in rows):
        raise typer.Exit(1)


@app.command()
def check() -> None:
    """A real round trip through Kafka, Redis and MLflow."""
    settings = load_settings()
    store = mlflow_store(settings)
    # Asked first, without MLflow's retries: a server that was down kept the round trip
    # (last, with retries and 120 s timeouts) silent for minutes.
    wait_for_mlflow(store, timeout_s=10.0)
    results = {
        "kafka produce→consume": kafka_round_trip(settings.kafka, settings.topic_replication),
        "redis set→get": redis_round_trip(settings.redis),
        "mlflow log→read": mlflow_round_trip(store, settings.mlflow_experiment),
    }
    for name, ms in results.items():
        console.print(f"  [green]ok[/] {name:<24} {ms:8.1f} ms")
    console.print("round trip ok")

