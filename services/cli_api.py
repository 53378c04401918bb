"""``streamrec api``: the HTTP API, dashboard and live feeds. Thin: read settings, build
the app, hand it to uvicorn (which handles signals and graceful shutdown)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from services.settings import load_settings

app = typer.Typer()
console = Console(stderr=True)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default STREAMREC_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default STREAMREC_API_PORT")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "warning",
) -> None:
    """Serve recommendations, live feeds, event ingest, metrics and the dashboard."""
    import uvicorn

    from services.api.app import create_api

    settings = load_settings()
    host, port = host or settings.api_host, port or settings.api_port
    console.print(f"api: http://{host}:{port}/ (dashboard), /docs (OpenAPI), "
                  f"lists from {settings.redis} channel {settings.recs_channel}, "
                  f"events to {settings.topic_interactions}")
    uvicorn.run(create_api(settings), host=host, port=port, log_level=log_level,
                access_log=False, timeout_graceful_shutdown=3)
