"""Making a model the champion by hand, as ``streamrec experiment conclude --promote`` and
``POST /v1/experiments/{name}/conclude`` do: one function both call, so the CLI and the API
cannot drift apart on what promoting means (the alias moved, then announced).

The trainer promotes through its own path (``services.trainer``): a compare-and-set on the
alias under a lock, since it promotes unattended and two trainers may race. A person
concluding an experiment has just read the evidence and chosen; the alias simply moves.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.settings import Settings
from services.stack import mlflow_store


def promote(settings: Settings, versions: Mapping[str, str]) -> bool:
    """Point the registry's ``champion`` alias at ``versions`` ({registered name: version}),
    then announce them on the model-updates topic so every worker swaps. Returns whether
    the broker took the announcement: the alias has moved either way, and workers that
    missed it load the new champion when they restart."""
    from streams.hot_swap import announce
    from streams.registry import set_champion

    set_champion(mlflow_store(settings), versions)
    return announce(settings.kafka, settings.topic_model_updates, dict(versions),
                    settings.mlflow_uri)
