"""`streamrec train` against a real MLflow store: run logged, models registered, loaded by alias."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import train_champion

from infra.mlflow_store import MlflowStore
from streams.registry import (
    LEGACY_NAMES,
    RANKER_NAME,
    RETRIEVER_NAME,
    alias_versions,
    load_bundle,
    load_champion,
    load_model,
)
from streams.synthetic import SyntheticConfig, generate


def test_train_logs_registers_and_loads_champion(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(
        SyntheticConfig(users=120, items=60, events=3000, seed=2))))
    env = {**os.environ, "STREAMREC_DATA_DIR": str(tmp_path / "state")}
    result = train_champion(env, data)
    assert "registered streamrec-retriever v1 (champion)" in " ".join(result.stdout.split())
    assert "registered streamrec-ranker v1 (champion)" in " ".join(result.stdout.split())


    store = MlflowStore.local(tmp_path / "state" / "mlflow")
    client = store.client()
    version = client.get_model_version_by_alias(RETRIEVER_NAME, "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags["git_commit"] and run.data.params["loss"] == "softmax"
    assert "test_full_NDCG_at_10" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2  # per epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curve.png", "id_maps.json"} <= artifacts

    sasrec = load_model(store, RETRIEVER_NAME)
    assert run.data.params["dropout"] == "0.2" == str(sasrec.encoder.dropout)  # 23 events a user
    seq = np.zeros((1, sasrec.max_len), dtype=np.int64)
    seq[0, -2:] = [1, 2]
    assert np.asarray(sasrec.encode(seq)).shape == (1, 64)
    ranker = load_model(store, "streamrec-ranker")
    assert ranker.use_score and ranker.session_dim == 64
    ranker_run = client.get_run(client.get_model_version_by_alias(RANKER_NAME, "champion").run_id)
    assert ranker_run.data.params["retrieval_order"] == str(ranker.retrieval_order)
    assert ranker_run.data.params["recommends_seen"] == str(ranker.recommends_seen)

    # A promotion lands while a worker loads: the alias moves after it was read. The
    # champion still comes whole, at the versions it was read at, never half of each.
    ranker_v1 = client.get_model_version_by_alias(RANKER_NAME, "champion")
    newer = client.create_model_version(RANKER_NAME, ranker_v1.source, run_id=ranker_v1.run_id)
    import mlflow

    download, loads = mlflow.artifacts.download_artifacts, []

    def promote_mid_load(*args: object, **kwargs: object) -> str:
        client.set_registered_model_alias(RANKER_NAME, "champion", newer.version)
        uri = str(kwargs.get("artifact_uri", args[0] if args else ""))
        if uri.startswith("models:/"):
            loads.append(uri)
        return download(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", promote_mid_load)
    champion = load_champion(store)
    monkeypatch.undo()
    assert champion.versions == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}
    assert loads == [f"models:/{RETRIEVER_NAME}/1", f"models:/{RANKER_NAME}/1"]
    client.set_registered_model_alias(RANKER_NAME, "champion", "1")

    # A store written before the retriever had its role name: the champion alias sits on
    # streamrec-sasrec. It still loads, and alias_versions names the model that holds it.
    legacy = LEGACY_NAMES[RETRIEVER_NAME]
    client.create_registered_model(legacy)
    old = client.create_model_version(legacy, version.source, run_id=version.run_id)
    client.set_registered_model_alias(legacy, "champion", old.version)
    client.delete_registered_model_alias(RETRIEVER_NAME, "champion")
    assert alias_versions(store, [RETRIEVER_NAME, RANKER_NAME]) == {legacy: "1", RANKER_NAME: "1"}
    bundle = load_bundle(store)
    assert bundle.version == f"{legacy}:v1+{RANKER_NAME}:v1"
    assert bundle.recommend(["u"], [[bundle.items.ids[0]]], 5)[0] is not None
