"""The model registry adapter (MLflow): log a training run (config, git commit, per-epoch
metrics, learning curve and comparison figures, model with signature), register the model,
move the ``champion`` alias, load by alias into the serving bundle. The trainer and the
worker's entry point reach MLflow only through here; ``model/`` never does.

Registered names follow the two roles of the pipeline: ``streamrec-retriever`` (SASRec)
and ``streamrec-ranker`` (NeuMF over the retriever's candidates); the standalone paper
NeuMF is ``streamrec-neumf``. A store written before the retriever had its role name
(``streamrec-sasrec``) still loads: an alias missing under the role name is looked up
under the legacy name, and the next promotion moves it to the role name.

Models load with Keras ``safe_mode`` on (no arbitrary code in a saved model), after the
streamrec layers are imported so their registered classes resolve.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from infra.errors import StackError
from infra.mlflow_store import MlflowStore
from infra.urls import mask_url
from model.data import IdMap
from model.fitting import predict_rows
from model.pipeline import CACHE_MB, PipelineScorer, ServingBundle
from model.ranking.neumf import sample_inputs
from streams.messages import CHAMPION, version_string

log = logging.getLogger(__name__)

RETRIEVER_NAME = "streamrec-retriever"
RANKER_NAME = "streamrec-ranker"
NEUMF_NAME = "streamrec-neumf"
ROLE_NAMES = (RETRIEVER_NAME, RANKER_NAME)
LEGACY_NAMES = {RETRIEVER_NAME: "streamrec-sasrec"}
BACKEND_PACKAGES = {"tensorflow": "tensorflow-cpu", "jax": "jax"}


def pip_requirements() -> list[str]:
    """What a logged model needs to load: Keras, NumPy, and the backend it was trained on at
    the running minor version (a model trained on JAX on a GPU does not pull in TensorFlow)."""
    package = BACKEND_PACKAGES.get(keras.backend.backend())
    needs = [f"keras=={_minor(keras.__version__)}.*", "numpy>=2"]
    if package is not None:
        needs.append(f"{package}=={_minor(importlib.metadata.version(package))}.*")
    return needs


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def git_commit() -> str:
    """The commit of this code (``-dirty`` with changes), logged as a model's provenance:
    asked of the checkout this module lives in, not of the directory the command runs
    in (another project's repository named its own commit; a data folder, none)."""
    here = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=5, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5, cwd=here).stdout.strip()
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


def comparison_figure(reports: Mapping[str, Mapping[str, Mapping[str, float]]],
                      title: str) -> Any:
    """Bars of HR@10, NDCG@10 and MRR per model, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["HR@10", "NDCG@10", "MRR"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(len(reports), 1)
    for ax, protocol in zip(axes, ("full", "sampled")):
        for i, (name, report) in enumerate(reports.items()):
            ax.bar(np.arange(len(metrics)) + i * width,
                   [report[protocol][m] for m in metrics], width, label=name)
        ax.set_xticks(np.arange(len(metrics)) + width * (len(reports) - 1) / 2, metrics)
        ax.set_title(f"{protocol} ranking")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_run(store: MlflowStore, experiment: str, run_name: str, *, params: Mapping[str, Any],
            curve: list[dict[str, float]], metrics: Mapping[str, float],
            models: Mapping[str, tuple[keras.Model, dict[str, np.ndarray]]],
            artifacts: Mapping[str, Any] | None = None, register: bool = True,
            tags: Mapping[str, str] | None = None,
            figures: Mapping[str, Any] | None = None) -> dict[str, str]:
    """One MLflow run; ``models`` maps a registered name to (model, example inputs).

    Returns {registered name: version} (empty when ``register`` is False).
    """
    import mlflow
    from mlflow.models import infer_signature

    store.activate()
    versions: dict[str, str] = {}
    with mlflow.start_run(experiment_id=store.experiment_id(experiment), run_name=run_name):
        mlflow.set_tags({"git_commit": git_commit(), **(tags or {})})
        mlflow.log_params({k: str(v) for k, v in params.items()})
        for point in curve:
            step = int(point["epoch"])
            mlflow.log_metrics({k: v for k, v in point.items() if k != "epoch"}, step=step)
        mlflow.log_metrics(dict(metrics))
        drawn = {**({"learning_curve.png": learning_curve_figure(curve, run_name)}
                    if curve else {}), **(figures or {})}
        for name, figure in drawn.items():
            mlflow.log_figure(figure, name)
            _close(figure)  # pyplot keeps every figure open: a trainer round leaked three
        for name, content in (artifacts or {}).items():
            mlflow.log_dict(content, name)
        for name, (model, example) in models.items():
            output = predict_rows(model, example)
            info = mlflow.keras.log_model(
                model, name=name, signature=infer_signature(example, output),
                registered_model_name=name if register else None,
                pip_requirements=pip_requirements())
            if register:
                versions[name] = str(info.registered_model_version)
    return versions


def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def set_champion(store: MlflowStore, versions: Mapping[str, str], alias: str = CHAMPION
                 ) -> None:
    """Point ``alias`` (the ``champion``, or e.g. the ``challenger`` of a live trial) of each
    registered name at its version."""
    client = store.client()
    for name, version in versions.items():
        client.set_registered_model_alias(name, alias, version)


def tag_versions(store: MlflowStore, versions: Mapping[str, str], tags: Mapping[str, str]
                 ) -> None:
    """Tags on registered model versions (e.g. why the trainer rejected them)."""
    client = store.client()
    for name, version in versions.items():
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)


# A version's tag: when it was last made the champion (µs since the epoch).
PROMOTED_US = "streamrec.promoted_us"


def promoted_since(store: MlflowStore, versions: Mapping[str, str], since_us: int) -> bool:
    """Whether any of ``versions`` was made the champion at or after ``since_us``, by its
    ``PROMOTED_US`` tag (the newest promotion of it)."""
    client = store.client()
    stamps = (client.get_model_version(n, v).tags.get(PROMOTED_US, "")
              for n, v in versions.items())
    return any(s.isdigit() and int(s) >= since_us for s in stamps)


# Model kind (what ``--models`` accepts) -> the name it is registered under.
REGISTERED = {"sasrec": RETRIEVER_NAME, "pipeline": RANKER_NAME, "neumf": NEUMF_NAME}


@dataclass(frozen=True)
class LoggedRun:
    test: dict            # both protocols on the split's test stage
    best_epoch: int
    versions: dict[str, str]


def log_trained(store: MlflowStore, experiment: str, trained: Mapping[str, Any], split: Any,
                label: str, configs: Mapping[str, Mapping[str, Any]],
                params: Mapping[str, Any], *, register: bool = True,
                metrics: Mapping[str, float] | None = None,
                tags: Mapping[str, str] | None = None,
                figures: Mapping[str, Any] | None = None) -> dict[str, LoggedRun]:
    """One MLflow run per trained model (``model.evaluation.harness.Trained``): its full
    config, test metrics on ``split`` (both protocols), curve, the model with its signature
    and the id maps; registered under ``REGISTERED[name]`` when ``register``."""
    from model.evaluation.harness import conversion_report
    from model.evaluation.protocols import evaluate

    seqs = split.sequences
    out = {}
    for name, t in trained.items():
        assert t.result is not None
        result = evaluate(t.scorer, split, "test")
        test_metrics = {f"test_{p}_{m}".replace("@", "_at_"): v for p in ("sampled", "full")
                        for m, v in result[p].items()}
        if isinstance(t.scorer, PipelineScorer):  # per head, on converted targets
            test_metrics.update({
                f"test_conversion_{head.replace(' ', '_')}_{m}".replace("@", "_at_"): v
                for head, figures in conversion_report(t.scorer, split).items()
                for m, v in figures.items() if m != "cases"})
        keras_model = t.result.model
        cfg = configs["sasrec" if name == "sasrec" else "neumf"]
        if name == "sasrec":  # the dropout it trained with: the log's when the config left it unset
            cfg = {**cfg, "dropout": keras_model.encoder.dropout}
        if name == "pipeline":  # what it chose on validation: the order among unseen
            cfg = {**cfg, "retrieval_order": keras_model.retrieval_order,  # items, and
                   "recommends_seen": keras_model.recommends_seen}  # whether lists hold seen
        versions = log_run(
            store, experiment, f"{name}-{label}",
            params={**cfg, **params, "model": name, "users": seqs.num_users,
                    "items": seqs.num_items},
            curve=t.result.curve, metrics={**test_metrics, **(metrics or {})},
            models={REGISTERED[name]: (keras_model,
                                       example_inputs(name, keras_model, configs["sasrec"]))},
            artifacts={"id_maps.json": {"users": seqs.users.to_list(),
                                        "items": seqs.items.to_list()}},
            register=register, tags=tags, figures=figures)
        out[name] = LoggedRun(result, t.result.best_epoch, versions)
    return out


def example_inputs(name: str, keras_model: keras.Model,
                   sasrec_cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A small batch of valid inputs: MLflow infers the signature from it."""
    if name == "sasrec":
        seq = np.zeros((2, int(sasrec_cfg["max_len"])), dtype=np.int64)
        seq[:, -3:] = [[1, 2, 3], [2, 3, 4]]
        return {"seq": seq, "types": (seq > 0).astype(np.int64), "pos": np.roll(seq, -1, axis=1),
                "neg": np.ones((2, 5), np.int64)}
    return {k: keras.ops.convert_to_numpy(v) for k, v in sample_inputs(keras_model).items()}


def load_model(store: MlflowStore, name: str, alias: str = CHAMPION,
               version: str | None = None) -> keras.Model:
    """Load a registered model by ``version`` (``models:/NAME/VERSION``), else by alias
    (``models:/NAME@alias``), with ``safe_mode`` on, without its training state (losses,
    optimizer): serving and warm starts need only the architecture and weights."""
    import mlflow

    import model.ranking.neumf  # noqa: F401  - register the custom classes before loading
    import model.retrieval.sasrec  # noqa: F401

    store.activate()
    uri = f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"
    # Into a folder of ours, removed once loaded: from a tracking server MLflow downloads
    # into a temporary folder of its own and never removes it (one model per swap).
    with tempfile.TemporaryDirectory(prefix="streamrec-model-") as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        return keras.saving.load_model(_keras_file(Path(local), uri), safe_mode=True,
                                       compile=False)


def _keras_file(folder: Path, uri: str) -> Path:
    """The ``.keras`` file of a downloaded MLflow Keras model, found as MLflow finds it.
    Not through ``mlflow.keras.load_model``: for a model whose MLmodel says
    ``save_exported_model`` it calls ``tf.saved_model.load``, which runs the graph it
    finds with no safe mode, so whoever can write the artifact store could choose it."""
    from mlflow.models import Model

    flavor = Model.load(str(folder / "MLmodel")).flavors.get("keras")
    if flavor is None or flavor.get("save_exported_model"):
        raise StackError(f"{uri} is not a Keras model saved in the .keras format; refusing "
                         "to load it (only .keras files load with safe_mode)")
    path = folder / flavor.get("data", "model")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise StackError(f"{uri}: its MLmodel points outside the model's folder; refusing "
                         "to load it")
    path = path / "model" if path.is_dir() else path
    return path.with_name(f"{path.name}.keras")


@dataclass(frozen=True)
class Champion:
    """The models behind an alias, the id maps logged with the retriever, their versions."""

    retriever: keras.Model
    ranker: keras.Model
    users: IdMap
    items: IdMap
    versions: dict[str, str]

    @property
    def version(self) -> str:
        return version_string(self.versions)


def _by_alias(client: Any, name: str, alias: str) -> Any:
    """The model version behind ``name@alias``, looked up under the legacy name of ``name``
    too; raises ``MlflowException`` when neither has it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if name not in LEGACY_NAMES or not _not_found(exc):  # an outage is no legacy store
            raise
        return client.get_model_version_by_alias(LEGACY_NAMES[name], alias)


def alias_versions(store: MlflowStore, names: list[str], alias: str = CHAMPION
                   ) -> dict[str, str] | None:
    """{registered name: version} behind ``alias`` (the legacy name where that is the one
    holding it), or None when any name has no such alias yet. Any other failure raises:
    read as "no champion", a registry that did not answer let ``train --champion`` skip
    the gate and a trainer round train from scratch."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        found = [_by_alias(client, n, alias) for n in names]
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise
    return {v.name: str(v.version) for v in found}


ALIAS = re.compile(r"[\w-]+")  # the names MLflow takes for an alias


class NoChampion(StackError):
    """The registry has no models under the alias yet: nothing has been promoted."""


def _not_found(exc: Exception) -> bool:
    """The registry's way of saying "no such model" or "no such alias" (MLflow reports a
    missing alias as an invalid parameter; other invalid parameters are real errors)."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc))


def parse_versions(ref: str) -> dict[str, str] | None:
    """The {registered name: version} a version string (``name:vN+name:vN``, the form lists
    and announcements print) names; None when ``ref`` is not one (an alias, say)."""
    versions = {}
    for part in ref.split("+"):
        name, _, version = part.rpartition(":v")
        if not name or not version.isdigit():
            return None
        versions[name] = version
    return versions


def _role_versions(store: MlflowStore, ref: str) -> list[Any]:
    """The registry's model versions (retriever, then ranker) that ``ref`` names: an alias
    (``champion``, ``challenger``), read now, or a version string, checked to exist. Raises
    ``NoChampion`` in one line when the registry has no such models."""
    from mlflow.exceptions import MlflowException

    pinned = parse_versions(ref)
    if pinned is None and not ALIAS.fullmatch(ref):  # MLflow refuses it as a bad parameter,
        raise NoChampion(f"{ref!r} is neither a version string (name:vN+name:vN) nor an "
                         "alias (letters, digits, '_' and '-')")  # not as a missing one
    client = store.client()
    try:
        if pinned is None:
            found = [_by_alias(client, n, ref) for n in ROLE_NAMES]
        else:
            found = [client.get_model_version(n, v) for n, v in pinned.items()]
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        what = f"alias {ref!r}" if pinned is None else f"versions {ref}"
        raise NoChampion(f"no models under the {what} in the registry at "
                         f"{mask_url(store.tracking_uri)}") from None
    names = [v.name for v in found]
    if len(names) != 2 or names[1] != RANKER_NAME or names[0] not in (
            RETRIEVER_NAME, LEGACY_NAMES[RETRIEVER_NAME]):
        raise NoChampion(f"{ref!r} must name a retriever version, then a ranker version: "
                         f"{RETRIEVER_NAME}:vN+{RANKER_NAME}:vN")
    return found


def resolve_versions(store: MlflowStore, ref: str) -> dict[str, str]:
    """{registered name: version} of the retriever and ranker that ``ref`` names (an alias
    or a version string); ``NoChampion`` when the registry has no such models."""
    return {v.name: str(v.version) for v in _role_versions(store, ref)}


def check_pair_maps(retriever: Mapping[str, list[str]], ranker: Mapping[str, list[str]]
                    ) -> None:
    """Refuse a ranker whose id maps do not begin with the retriever's: trained on another
    log, or on another order of the same ids, its rows belong to other users and items.
    By row counts alone, such a ranker with as many rows as the retriever's maps was
    served, every score finite and every one another entity's. (A ranker trained later,
    whose maps extend the retriever's, passes.)"""
    for what in ("users", "items"):
        ours, theirs = retriever[what], ranker[what]
        if theirs[:len(ours)] != ours:
            at = next((n for n, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                      min(len(ours), len(theirs)))
            raise ValueError(f"the ranker was not trained with the retriever's id maps: "
                             f"{what} differ from position {at} ({len(ours)} in the "
                             f"retriever's, {len(theirs)} in the ranker's)")


def load_champion(store: MlflowStore, alias: str = CHAMPION) -> Champion:
    """Retriever and ranker behind ``alias`` (an alias or a version string, read once) and
    the id maps logged with the retriever; raises ``NoChampion`` when there are none."""
    import json

    import mlflow

    # By the versions the alias named when read, not by the alias again: a promotion
    # landing mid-load must not pair one champion's retriever with the next one's ranker.
    retriever, ranker = _role_versions(store, alias)
    store.activate()

    def id_maps(run_id: str) -> dict[str, list[str]]:
        with tempfile.TemporaryDirectory(prefix="streamrec-maps-") as folder:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="id_maps.json", dst_path=folder)
            with open(path) as handle:
                return json.load(handle)

    maps = id_maps(retriever.run_id)
    if ranker.run_id != retriever.run_id:
        # Known absent by the run's listing, never by a failed download: MLflow reports
        # any download failure (a timeout) as "does not exist", and a ranker paired by row
        # counts alone passes with another log's maps. A listing that fails fails the load.
        logged = {a.path for a in mlflow.MlflowClient().list_artifacts(ranker.run_id)}
        if "id_maps.json" in logged:
            check_pair_maps(maps, id_maps(ranker.run_id))
        else:
            log.warning("the ranker's run logged no id maps: paired by row counts alone")
    return Champion(load_model(store, retriever.name, version=retriever.version),
                    load_model(store, ranker.name, version=ranker.version),
                    IdMap.from_list(maps["users"]), IdMap.from_list(maps["items"]),
                    {v.name: str(v.version) for v in (retriever, ranker)})


def load_bundle(store: MlflowStore, alias: str = CHAMPION,
                head_weights: Mapping[str, float] | None = None,
                cache_mb: float = CACHE_MB) -> ServingBundle:
    """The serving bundle for ``alias``; its version string names both registry versions;
    ``head_weights`` combine the ranker's heads, ``cache_mb`` bounds its encoder caches
    (settings)."""
    c = load_champion(store, alias)
    return ServingBundle.from_models(c.retriever, c.ranker, c.users, c.items, c.version,
                                     head_weights=head_weights, cache_mb=cache_mb)
