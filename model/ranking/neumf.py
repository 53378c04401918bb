"""NeuMF (He et al. 2017): a GMF branch and an MLP branch over user and item embeddings,
fused by one output layer; optionally GMF and MLP are pretrained alone, then fused.

To rerank retrieval candidates for a live session, the inputs extend beyond the paper:
``session`` (the SASRec session embedding) joins the MLP branch, ``score`` (the
retrieval score) and ``context`` (features of the triggering event) join the fusion
layer. User id 0 is the "unknown user" row, learned from training examples whose user
id was dropped, so brand-new users still get a sensible score.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

BRANCHES = ("both", "gmf", "mlp")


@keras.saving.register_keras_serializable(package="streamrec")
class NeuMF(keras.Model):
    """``call({"user", "item"[, "session", "score", "context"]})`` -> logits [batch, 1]."""

    def __init__(self, num_users: int, num_items: int, gmf_dim: int = 32,
                 mlp_layers: tuple[int, ...] | list[int] = (64, 32, 16), session_dim: int = 0,
                 use_score: bool = False, context_dim: int = 0, branch: str = "both",
                 dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}. Received: branch={branch!r}")
        if num_users < 0 or num_items < 1 or gmf_dim < 1 or not mlp_layers:
            raise ValueError(f"need num_items >= 1, gmf_dim >= 1 and mlp_layers. Received: "
                             f"num_items={num_items}, gmf_dim={gmf_dim}, mlp_layers={mlp_layers}")
        self.num_users, self.num_items, self.gmf_dim = num_users, num_items, gmf_dim
        self.mlp_layers = tuple(int(x) for x in mlp_layers)
        self.session_dim, self.use_score, self.context_dim = session_dim, use_score, context_dim
        self.branch, self.dropout_rate = branch, dropout
        if branch in ("both", "gmf"):
            self.gmf_user = keras.layers.Embedding(num_users + 1, gmf_dim, name="gmf_user")
            self.gmf_item = keras.layers.Embedding(num_items + 1, gmf_dim, name="gmf_item")
        if branch in ("both", "mlp"):
            half = self.mlp_layers[0] // 2
            self.mlp_user = keras.layers.Embedding(num_users + 1, half, name="mlp_user")
            self.mlp_item = keras.layers.Embedding(num_items + 1, half, name="mlp_item")
            self.mlp = [keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")
                        for i, units in enumerate(self.mlp_layers[1:])]
            self.drop = keras.layers.Dropout(dropout)
        self.out = keras.layers.Dense(1, name="fusion")

    def branch_outputs(self, inputs: dict[str, Any], training: bool = False) -> list[Any]:
        parts = []
        if self.branch in ("both", "gmf"):
            parts.append(self.gmf_user(inputs["user"]) * self.gmf_item(inputs["item"]))
        if self.branch in ("both", "mlp"):
            x = [self.mlp_user(inputs["user"]), self.mlp_item(inputs["item"])]
            if self.session_dim:
                x.append(ops.cast(inputs["session"], "float32"))
            h = ops.concatenate(x, axis=-1)
            for layer in self.mlp:
                h = self.drop(layer(h), training=training)
            parts.append(h)
        return parts

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        parts = self.branch_outputs(inputs, training)
        if self.use_score:
            parts.append(ops.reshape(ops.cast(inputs["score"], "float32"), (-1, 1)))
        if self.context_dim:
            parts.append(ops.cast(inputs["context"], "float32"))
        return self.out(ops.concatenate(parts, axis=-1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_users": self.num_users, "num_items": self.num_items,
                "gmf_dim": self.gmf_dim, "mlp_layers": list(self.mlp_layers),
                "session_dim": self.session_dim, "use_score": self.use_score,
                "context_dim": self.context_dim, "branch": self.branch,
                "dropout": self.dropout_rate}


def fuse_pretrained(gmf: NeuMF, mlp: NeuMF, alpha: float = 0.5) -> NeuMF:
    """The paper's initialisation: embeddings and MLP from the pretrained branches, the
    fusion layer as alpha * GMF's output weights and (1 - alpha) * MLP's."""
    cfg = {**mlp.get_config(), "branch": "both", "gmf_dim": gmf.gmf_dim}
    for key in ("name", "trainable", "dtype"):
        cfg.pop(key, None)
    fused = NeuMF(**cfg)
    sample = _sample_inputs(fused)
    fused(sample), gmf(sample), mlp(sample)
    fused.gmf_user.set_weights(gmf.gmf_user.get_weights())
    fused.gmf_item.set_weights(gmf.gmf_item.get_weights())
    fused.mlp_user.set_weights(mlp.mlp_user.get_weights())
    fused.mlp_item.set_weights(mlp.mlp_item.get_weights())
    for mine, theirs in zip(fused.mlp, mlp.mlp):
        mine.set_weights(theirs.get_weights())
    (gk, gb), (mk, mb) = gmf.out.get_weights(), mlp.out.get_weights()
    extra = mk[mlp.mlp_layers[-1]:]  # score / context weights follow the MLP output
    kernel = ops.convert_to_numpy(ops.concatenate(
        [alpha * gk[:gmf.gmf_dim], (1 - alpha) * mk[:mlp.mlp_layers[-1]], extra], axis=0))
    fused.out.set_weights([kernel, alpha * gb + (1 - alpha) * mb])
    return fused


def start_from_score(model: NeuMF) -> NeuMF:
    """Initialise a reranker to reproduce its retriever: the fusion layer weighs the
    retrieval score 1 and every learned feature 0, so training learns corrections."""
    if not model.use_score:
        raise ValueError("start_from_score needs a model built with use_score=True")
    model(_sample_inputs(model))
    kernel, bias = model.out.get_weights()
    kernel[:] = 0.0
    branch_width = (model.gmf_dim if model.branch in ("both", "gmf") else 0) + (
        model.mlp_layers[-1] if model.branch in ("both", "mlp") else 0)
    kernel[branch_width] = 1.0
    model.out.set_weights([kernel, bias * 0.0])
    return model


def _sample_inputs(model: NeuMF) -> dict[str, Any]:
    sample: dict[str, Any] = {"user": ops.zeros((1,), "int32"), "item": ops.ones((1,), "int32")}
    if model.session_dim:
        sample["session"] = ops.zeros((1, model.session_dim))
    if model.use_score:
        sample["score"] = ops.zeros((1, 1))
    if model.context_dim:
        sample["context"] = ops.zeros((1, model.context_dim))
    return sample
