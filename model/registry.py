"""MLflow: log a training run (config, git commit, per-epoch metrics, learning curve,
model with signature), register the model, move the ``champion`` alias, load by alias.

Models load with Keras ``safe_mode`` on (no arbitrary code in a saved model), after the
streamrec layers are imported so their registered classes resolve.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from infra.mlflow_store import MlflowStore

CHAMPION = "champion"
ENCODER_NAME = "streamrec-sasrec"
RANKER_NAME = "streamrec-ranker"
NEUMF_NAME = "streamrec-neumf"
PIP_REQUIREMENTS = ["keras==3.15.*", "tensorflow-cpu==2.21.*", "numpy>=2"]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def learning_curve_figure(curve: list[dict[str, float]], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4))
    epochs = [p["epoch"] for p in curve if "loss" in p]
    left.plot(epochs, [p["loss"] for p in curve if "loss" in p], color="tab:blue", label="loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right = left.twinx()
    evals = [p for p in curve if "valid_ndcg10" in p]
    right.plot([p["epoch"] for p in evals], [p["valid_ndcg10"] for p in evals], "o-",
               color="tab:orange", label="valid NDCG@10 (full)")
    right.set_ylabel("validation NDCG@10, full ranking")
    fig.suptitle(title)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.9))
    fig.tight_layout()
    return fig


def log_run(store: MlflowStore, experiment: str, run_name: str, *, params: Mapping[str, Any],
            curve: list[dict[str, float]], metrics: Mapping[str, float],
            models: Mapping[str, tuple[keras.Model, dict[str, np.ndarray]]],
            artifacts: Mapping[str, Any] | None = None, register: bool = True,
            champion: bool = False, tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """One MLflow run; ``models`` maps a registered name to (model, example inputs).

    Returns {registered name: version} (empty when ``register`` is False).
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(store.tracking_uri)
    versions: dict[str, str] = {}
    with mlflow.start_run(experiment_id=store.experiment_id(experiment), run_name=run_name):
        mlflow.set_tags({"git_commit": git_commit(), **(tags or {})})
        mlflow.log_params({k: str(v) for k, v in params.items()})
        for point in curve:
            step = int(point["epoch"])
            mlflow.log_metrics({k: v for k, v in point.items() if k != "epoch"}, step=step)
        mlflow.log_metrics(dict(metrics))
        if curve:
            mlflow.log_figure(learning_curve_figure(curve, run_name), "learning_curve.png")
        for name, content in (artifacts or {}).items():
            mlflow.log_dict(content, name)
        for name, (model, example) in models.items():
            output = keras.ops.convert_to_numpy(model.predict_on_batch(example))
            info = mlflow.keras.log_model(
                model, name=name, signature=infer_signature(example, output),
                registered_model_name=name if register else None,
                pip_requirements=PIP_REQUIREMENTS)
            if register:
                versions[name] = str(info.registered_model_version)
    if champion:
        client = MlflowClient(tracking_uri=store.tracking_uri)
        for name, version in versions.items():
            client.set_registered_model_alias(name, CHAMPION, version)
    return versions


def load_model(store: MlflowStore, name: str, alias: str = CHAMPION) -> keras.Model:
    """Load a registered model by alias (``models:/NAME@alias``) with ``safe_mode`` on."""
    import mlflow

    import model.neumf  # noqa: F401  - register the custom classes before loading
    import model.sasrec  # noqa: F401

    mlflow.set_tracking_uri(store.tracking_uri)
    return mlflow.keras.load_model(f"models:/{name}@{alias}",
                                   load_model_kwargs={"safe_mode": True})


def load_bundle(store: MlflowStore, encoder_name: str, ranker_name: str | None,
                alias: str = CHAMPION):  # type: ignore[no-untyped-def]
    """The serving bundle for ``alias``: encoder and ranker models plus the id maps logged
    with the encoder's run. The version string names both registry versions."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from model.bundle import ServingBundle
    from model.data import IdMap

    client = MlflowClient(tracking_uri=store.tracking_uri)
    enc_version = client.get_model_version_by_alias(encoder_name, alias)
    mlflow.set_tracking_uri(store.tracking_uri)
    maps_path = mlflow.artifacts.download_artifacts(
        run_id=enc_version.run_id, artifact_path="id_maps.json")
    with open(maps_path) as handle:
        maps = json.load(handle)
    version = f"{encoder_name}:v{enc_version.version}"
    ranker = None
    if ranker_name is not None:
        ranker = load_model(store, ranker_name, alias)
        version += f"+{ranker_name}:v{client.get_model_version_by_alias(ranker_name, alias).version}"
    return ServingBundle.from_models(load_model(store, encoder_name, alias), ranker,
                                     IdMap.from_list(maps["users"]),
                                     IdMap.from_list(maps["items"]), version)
