"""NeuMF reranking in plain NumPy over exported weights, for the stream workers.

A Keras call per micro-batch costs milliseconds of fixed overhead, and scoring
``batch x candidates`` pairs through the full network repeats per-user work per
candidate. Here what depends only on the user and session (their GMF and first MLP
layer terms) is computed once per row, what depends only on the item (its first MLP
layer term) once per model, and only the rest per candidate. ``NumpyNeuMF.score``
equals ``NeuMF.call`` (a test holds them to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.ranking.neumf import NeuMF
from model.weights import layer_arrays


@dataclass(frozen=True)
class NumpyNeuMF:
    gmf_user: np.ndarray | None      # [users + 1, g] scaled by the fusion weights of GMF
    gmf_item: np.ndarray | None      # [items + 1, g]
    mlp_user: np.ndarray | None      # [users + 1, h1]: user embedding @ its rows of layer 1
    mlp_item: np.ndarray | None      # [items + 1, h1]: item embedding @ its rows of layer 1
    mlp_session: np.ndarray | None   # [session_dim, h1]
    mlp_bias: np.ndarray | None      # [h1]
    mlp_rest: tuple[tuple[np.ndarray, np.ndarray], ...]  # layers after the first
    fuse_mlp: np.ndarray | None      # [h_last]
    fuse_score: float
    fuse_context: np.ndarray | None  # [context_dim]
    fuse_bias: float

    def score(self, users: np.ndarray, items: np.ndarray, session: np.ndarray | None = None,
              retrieval: np.ndarray | None = None, context: np.ndarray | None = None
              ) -> np.ndarray:
        """Logits [batch, candidates] for ``users`` [batch], candidate ``items``
        [batch, candidates], ``session`` [batch, d], ``retrieval`` scores [batch, candidates]
        and ``context`` [batch, context_dim] (the features of each row's event)."""
        out = np.full(items.shape, self.fuse_bias, np.float32)
        if self.gmf_user is not None and self.gmf_item is not None:
            out += np.einsum("bg,bcg->bc", self.gmf_user[users], self.gmf_item[items])
        if self.mlp_user is not None and self.mlp_item is not None:
            row = self.mlp_user[users] + self.mlp_bias
            if self.mlp_session is not None:
                row = row + session @ self.mlp_session
            h = np.maximum(row[:, None, :] + self.mlp_item[items], 0).reshape(-1, row.shape[1])
            for kernel, bias in self.mlp_rest:
                h = np.maximum(h @ kernel + bias, 0)
            out += (h @ self.fuse_mlp).reshape(items.shape)
        if self.fuse_score:
            out += self.fuse_score * retrieval
        if self.fuse_context is not None:
            out += (context @ self.fuse_context)[:, None]
        return out


def export_neumf(model: NeuMF) -> NumpyNeuMF:
    """Copy a trained model's weights out, folding what can be precomputed."""
    if model.branch in ("both", "mlp") and not model.mlp:
        raise ValueError("serving needs at least one hidden MLP layer. Received: "
                         f"mlp_layers={model.mlp_layers}")
    kernel, bias = layer_arrays(model.out)
    kernel = kernel[:, 0]
    at = 0
    gmf_user = gmf_item = mlp_user = mlp_item = mlp_session = mlp_bias = fuse_mlp = None
    rest: list[tuple[np.ndarray, np.ndarray]] = []
    if model.branch in ("both", "gmf"):
        gmf_user = layer_arrays(model.gmf_user)[0] * kernel[:model.gmf_dim]
        gmf_item = layer_arrays(model.gmf_item)[0]
        at = model.gmf_dim
    if model.branch in ("both", "mlp"):
        users, items = layer_arrays(model.mlp_user)[0], layer_arrays(model.mlp_item)[0]
        (first, mlp_bias), *more = [layer_arrays(layer) for layer in model.mlp]
        half = users.shape[1]
        mlp_user, mlp_item = users @ first[:half], items @ first[half:2 * half]
        mlp_session = first[2 * half:] if model.session_dim else None
        rest = [(k, b) for k, b in more]
        fuse_mlp = kernel[at:at + model.mlp_layers[-1]]
        at += model.mlp_layers[-1]
    fuse_score = float(kernel[at]) if model.use_score else 0.0
    at += int(model.use_score)
    fuse_context = kernel[at:at + model.context_dim] if model.context_dim else None
    return NumpyNeuMF(gmf_user, gmf_item, mlp_user, mlp_item, mlp_session, mlp_bias,
                      tuple(rest), fuse_mlp, fuse_score, fuse_context, float(bias[0]))
