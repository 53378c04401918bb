"""Keras backends: data-parallel training through Keras' distribution API
(``model.fitting.start_training``) on two host devices that XLA pretends to have, so the
multi-GPU path runs on any machine; and the requirements logged with a model name the
backend it was trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest

from streams.registry import pip_requirements

SCRIPT = """
import json, keras, numpy as np
from model.data import build_sequences, leave_last_out
from model.fitting import predict_rows
from model.ranking.training import NeuMFConfig, fit_neumf
from model.retrieval.training import SASRecConfig, fit_sasrec
from streams.synthetic import SyntheticConfig, generate
split = leave_last_out(build_sequences(generate(SyntheticConfig(users=60, items=300, events=1500))))
sasrec = fit_sasrec(split, SASRecConfig(max_len=8, dim=16, epochs=2, eval_every=1,
                                        batch_size=16, negatives=5))
neumf = fit_neumf(split, NeuMFConfig(epochs=1, eval_every=1, batch_size=64))
table = sasrec.model.encoder.item_embedding.embeddings.value
odd = predict_rows(neumf.model, {"user": np.array([1, 2, 3]), "item": np.array([4, 5, 6])})
print(json.dumps({"distribution": type(keras.distribution.distribution()).__name__,
                  "mesh": dict(table.sharding.mesh.shape),
                  "losses": [sasrec.curve[-1]["loss"], neumf.curve[-1]["loss"]],
                  "odd_rows": list(odd.shape),
                  "ndcg": [sasrec.curve[-1]["valid_ndcg10"], neumf.curve[-1]["valid_ndcg10"]]}))
"""


@pytest.mark.keras
def test_logged_requirements_name_the_training_backend() -> None:
    needs = pip_requirements()
    backend = {"tensorflow": "tensorflow-cpu==", "jax": "jax=="}[keras.backend.backend()]
    assert any(n.startswith(backend) for n in needs), needs
    assert any(n.startswith("keras==3.") for n in needs)
    assert not any(n.startswith("tensorflow") for n in needs) or backend.startswith("tensorflow")


def test_two_devices_train_data_parallel_to_finite_losses() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["distribution"] == "DataParallel"
    assert figures["mesh"] == {"batch": 2}  # weights replicated over both devices
    assert figures["odd_rows"] == [3, 1]  # rows that do not split evenly still predict
    assert all(0.0 < loss < 100.0 for loss in figures["losses"])
    assert all(0.0 <= ndcg <= 1.0 for ndcg in figures["ndcg"])
