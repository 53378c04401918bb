"""Models load from the registry's downloads as ``.keras`` files with safe_mode, never
through a path that runs what the artifact store holds."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from infra.errors import StackError
from streams.registry import _keras_file


def _saved(folder: Path) -> keras.Model:
    import mlflow

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    mlflow.keras.save_model(model, str(folder), pip_requirements=[])
    return model


def test_a_downloaded_keras_model_is_found_where_mlflow_saves_it(tmp_path: Path) -> None:
    model = _saved(tmp_path / "m")
    loaded = keras.saving.load_model(_keras_file(tmp_path / "m", "models:/m/1"),
                                     safe_mode=True, compile=False)
    x = np.ones((1, 3), np.float32)
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_model_flagged_as_an_exported_graph_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path / "m")
    spec = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    spec["flavors"]["keras"]["save_exported_model"] = True  # MLflow would tf.saved_model.load
    (tmp_path / "m" / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(StackError, match="models:/m/1 is not a Keras model saved in the .keras"):
        _keras_file(tmp_path / "m", "models:/m/1")


def test_a_model_whose_mlmodel_points_outside_its_folder_is_refused(tmp_path: Path) -> None:
    """``data: ../elsewhere/model`` loaded a file from outside the download."""
    _saved(tmp_path / "m")
    _saved(tmp_path / "elsewhere")
    spec = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    spec["flavors"]["keras"]["data"] = "../elsewhere/data"
    (tmp_path / "m" / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(StackError, match="points outside the model's folder"):
        _keras_file(tmp_path / "m", "models:/m/1")


@pytest.mark.parametrize("ranker_maps", ["unreadable", "absent", "logged"])
def test_a_failed_read_of_the_rankers_id_maps_fails_the_load_not_the_pairing_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranker_maps: str) -> None:
    """Any error reading them meant "a run logged without maps", and MLflow reports a
    failed download (a timeout) as "does not exist": one registry blip during a swap
    paired the ranker by row counts alone, which a ranker of another log passes. A run
    that logged none is still paired by counts (a review)."""
    import json
    from types import SimpleNamespace

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    import streams.registry as registry
    from infra.mlflow_store import MlflowStore

    store = MlflowStore.local(tmp_path / "store")
    store.ensure()
    client = store.client()
    runs = [client.create_run(store.experiment_id("t")).info.run_id for _ in range(2)]
    client.log_text(runs[0], json.dumps({"users": ["u1"], "items": ["a"]}), "id_maps.json")
    if ranker_maps != "absent":
        client.log_text(runs[1], json.dumps({"users": ["u1"], "items": ["a", "b"]}),
                        "id_maps.json")
    monkeypatch.setattr(registry, "_role_versions", lambda store, ref: [
        SimpleNamespace(name=registry.RETRIEVER_NAME, version="3", run_id=runs[0]),
        SimpleNamespace(name=registry.RANKER_NAME, version="9", run_id=runs[1])])
    monkeypatch.setattr(registry, "load_model", lambda *_, **__: object())
    download = LocalArtifactRepository._download_file

    def blip(self: LocalArtifactRepository, remote_file_path: str, local_path: str) -> None:
        if runs[1] in str(self.artifact_dir):
            raise ConnectionError("registry timed out")
        download(self, remote_file_path, local_path)

    if ranker_maps == "unreadable":
        monkeypatch.setattr(LocalArtifactRepository, "_download_file", blip)
        with pytest.raises(Exception, match="Failed to download"):  # MLflow's wrapping
            registry.load_champion(store)
        return
    assert registry.load_champion(store).items.ids == ["a"]


def test_the_registry_is_the_settings_store_whatever_mlflow_registry_uri_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the tracking URI alone, MLflow takes the registry from MLFLOW_REGISTRY_URI:
    champions were set, and loaded, in a store the settings do not name."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from infra.mlflow_store import MlflowStore
    from streams.registry import set_champion

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", elsewhere)
    store = MlflowStore.local(tmp_path / "ours")
    store.ensure()
    client = store.client()
    client.create_registered_model("retriever")
    run = client.create_run(store.experiment_id("t"))
    client.create_model_version("retriever", f"runs:/{run.info.run_id}/m", run.info.run_id)
    set_champion(store, {"retriever": "1"})
    assert str(client.get_model_version_by_alias("retriever", "champion").version) == "1"
    other = MlflowClient(tracking_uri=elsewhere, registry_uri=elsewhere)
    assert other.search_registered_models() == []
    store.activate()
    assert mlflow.get_registry_uri() == store.tracking_uri


def test_only_a_missing_alias_reads_as_no_champion(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every registry error read as "no champion": with the registry not answering,
    ``train --champion`` skipped the gate and a trainer round started from scratch."""
    from mlflow.exceptions import MlflowException

    import streams.registry as registry
    from infra.mlflow_store import MlflowStore

    store = MlflowStore.local(tmp_path)
    store.ensure()
    names = ["retriever", "ranker"]
    assert registry.alias_versions(store, names) is None  # no such model
    for name in names:
        store.client().create_registered_model(name)
    assert registry.alias_versions(store, names) is None  # no such alias

    calls: list[str] = []

    def unreachable(self: object, name: str, alias: str) -> object:  # then back: legacy
        calls.append(name)  # names are not found, which must not read as "no champion"
        if len(calls) == 1:
            raise MlflowException("API request failed: 503",
                                  error_code="TEMPORARILY_UNAVAILABLE")
        raise MlflowException("not found", error_code="RESOURCE_DOES_NOT_EXIST")

    monkeypatch.setattr("mlflow.tracking.MlflowClient.get_model_version_by_alias", unreachable)
    with pytest.raises(MlflowException, match="503"):
        registry.alias_versions(store, [registry.RETRIEVER_NAME, registry.RANKER_NAME])
    assert len(calls) == 1
