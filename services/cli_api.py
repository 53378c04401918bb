"""``streamrec api``: the HTTP API, dashboard and live feeds. Thin: read settings, build
the app, hand it to uvicorn (which handles signals and graceful shutdown)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from infra.urls import mask_url
from services.logs import LogLevel, configure
from services.settings import load_settings

app = typer.Typer()
console = Console(stderr=True)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default STREAMREC_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535,
                                             help="default STREAMREC_API_PORT")] = None,
    log_level: Annotated[LogLevel, typer.Option()] = LogLevel.warning,
) -> None:
    """Serve recommendations, live feeds, event ingest, metrics and the dashboard."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from services.api.app import create_api

    settings = load_settings()
    logs = configure(settings.log_format, log_level, "api")
    host, port = host or settings.api_host, port or settings.api_port
    logs.say(console, f"api: http://{host}:{port}/ (dashboard), /docs (OpenAPI), "
             f"lists from {mask_url(settings.redis)} channel {settings.recs_channel}, "
             f"events to {settings.topic_interactions}")
    uvicorn.run(create_api(settings), host=host, port=port, log_level=log_level.value,
                log_config=logs.config or LOGGING_CONFIG, access_log=False,
                timeout_graceful_shutdown=3)
