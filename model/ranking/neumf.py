"""NeuMF (He et al. 2017): a GMF branch and an MLP branch over user and item embeddings,
fused by one output layer; optionally GMF and MLP are pretrained alone, then fused.

To rerank retrieval candidates for a live session, the inputs extend beyond the paper.
Per row (one session): ``session`` (the SASRec session embedding), ``context`` (the
newest event's dense features, ``model.features``) and ``categories`` (its hashed
categorical context ids, one embedding per key, summed). Per candidate: ``score`` (the
retrieval score, straight into the heads) and ``pair`` (retrieval rank, whether and how
long ago the user met the item: ``model.features.pair_features``).
All but ``score`` join the MLP branch: a per-row feature that reached the heads linearly
would shift every candidate of a list alike and reorder nothing. With ``wide``, the
per-candidate ``pair`` features also reach the heads linearly, beside the score (the
"wide" part of Wide & Deep, Cheng et al. 2016): a ranker started from the retrieval score
gets a gradient for them at once, where the MLP's, behind a fusion weight of 0, starts
at nothing.

Multi-task: GMF and MLP are the shared bottom; ``tasks`` names one linear head each
(the ``fusion`` layer has one unit per task), e.g. ``("next", "conversion")``. With
``conditional``, the heads after ``next`` are conditional instead, as in ESMM (Ma et al.
2018): ``given`` estimates P(the task | the user's next interaction is this item), from
the MLP's output, the retrieval score, the pair features and the newest event's context
(which no listwise head can use: it shifts a whole list alike, but whether the next
interaction converts depends on it, e.g. on a cart add just before). The served score,
the next head's logit plus a weight times a conditional one, leans towards what converts
as ESMM's product of the two does. The GMF term (user x item ids) stays out of these
heads: they learn from one example per list, and ids are what such heads memorise
(docs/BENCHMARKS.md, issue #14). User id 0
is the "unknown user" row, learned from training examples whose user id was dropped, so
brand-new users still get a sensible score.

With a catalogue (``content``, a ``ContentSpec`` as a dict) the MLP's item side is its id
embedding plus an embedding of the item's content, the id dropped at random in training
(``id_dropout``) as in the retriever, so an item known by content alone is scored by its
content (GMF, an id-only product, gives it nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from model.content import ContentSpec, ContentTable, ItemContentEncoder, ItemContentTable
from model.features import HEAD_WEIGHTS, TASKS

BRANCHES = ("both", "gmf", "mlp")

CATEGORY_DIM = 8  # width of each categorical context embedding
ID_TABLES = ("gmf_user", "mlp_user", "gmf_item", "mlp_item")  # the id embeddings' layers


@keras.saving.register_keras_serializable(package="streamrec")
class NeuMF(keras.Model):
    """``call({"user", "item"[, "session", "score", "context", "categories", "pair"]})``
    -> logits [batch, len(tasks)]. ``features`` is the ``FeatureSpec`` (as a dict) the
    model was trained with, kept in its config so serving computes the same features.
    ``fold_epochs`` is training state a warm start carries forward: the epochs the
    retrievers of its cross-fitted lists trained from scratch
    (``model.ranking.training.cross_fitted_examples``); 0 when unknown. ``seen_window``: how
    many of a user's newest items its seen-before features and recent candidates read
    (``model.ranking.inputs``), the window a worker's sessions keep; 0: all (older
    models). ``retrieval_order``: among the items a user has not met, the served lists
    keep the retriever's order (``model.ranking.inputs.served_scores``); ``fit_ranker``
    chooses it on validation (older models: false, the ranker's own order).
    ``recommends_seen``: live lists may hold the session's own items, placed by the
    ranker, where ``STREAMREC_RECS_EXCLUDE_SEEN`` is ``auto``; ``fit_ranker`` chooses it
    on validation (older models: false, the session's items left out)."""

    def __init__(self, num_users: int, num_items: int, gmf_dim: int = 32,
                 mlp_layers: tuple[int, ...] | list[int] = (64, 32, 16), session_dim: int = 0,
                 use_score: bool = False, context_dim: int = 0, branch: str = "both",
                 dropout: float = 0.1, categories: int = 0, buckets: int = 0,
                 pair_dim: int = 0, tasks: tuple[str, ...] | list[str] = ("next",),
                 features: dict[str, Any] | None = None, id_l2: float = 0.0,
                 content: dict[str, Any] | None = None, id_dropout: float = 0.0,
                 wide: bool = False, conditional: bool = False, fold_epochs: int = 0,
                 seen_window: int = 0, retrieval_order: bool = False,
                 recommends_seen: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if content and branch == "gmf":
            raise ValueError("content features need the MLP branch")
        if (context_dim or categories or pair_dim) and branch == "gmf":
            raise ValueError("context, categories and pair features need the MLP branch")
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}. Received: branch={branch!r}")
        if conditional and (branch == "gmf" or tuple(tasks)[:1] != ("next",)):
            raise ValueError(f"conditional heads need the MLP branch and 'next' as the first "
                             f"task. Received: branch={branch!r}, tasks={tuple(tasks)}")
        if num_users < 0 or num_items < 1 or gmf_dim < 1 or not mlp_layers or seen_window < 0:
            raise ValueError(f"need num_items >= 1, gmf_dim >= 1, mlp_layers and seen_window >= 0. "
                             f"Received: num_items={num_items}, gmf_dim={gmf_dim}, "
                             f"mlp_layers={mlp_layers}, seen_window={seen_window}")
        self.num_users, self.num_items, self.gmf_dim = num_users, num_items, gmf_dim
        self.mlp_layers = tuple(int(x) for x in mlp_layers)
        self.session_dim, self.use_score, self.context_dim = session_dim, use_score, context_dim
        self.branch, self.dropout_rate = branch, dropout
        self.categories, self.buckets, self.pair_dim = categories, buckets, pair_dim
        self.tasks, self.features, self.id_l2 = tuple(tasks), features, id_l2
        self.content, self.id_dropout, self.wide = content, id_dropout, wide
        self.conditional = conditional and len(self.tasks) > 1
        self.fold_epochs, self.seen_window = fold_epochs, seen_window
        self.retrieval_order, self.recommends_seen = bool(retrieval_order), bool(recommends_seen)
        ids = keras.regularizers.L2(id_l2) if id_l2 else None
        if categories:
            self.category_table = keras.layers.Embedding(categories * buckets, CATEGORY_DIM,
                                                         name="categories")
        if branch in ("both", "gmf"):
            self.gmf_user = keras.layers.Embedding(num_users + 1, gmf_dim, name="gmf_user",
                                                   embeddings_regularizer=ids)
            self.gmf_item = keras.layers.Embedding(num_items + 1, gmf_dim, name="gmf_item",
                                                   embeddings_regularizer=ids)
        if branch in ("both", "mlp"):
            half = self.mlp_layers[0] // 2
            self.mlp_user = keras.layers.Embedding(num_users + 1, half, name="mlp_user",
                                                   embeddings_regularizer=ids)
            self.mlp_item = keras.layers.Embedding(num_items + 1, half, name="mlp_item",
                                                   embeddings_regularizer=ids)
            self.mlp = [keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")
                        for i, units in enumerate(self.mlp_layers[1:])]
            self.drop = keras.layers.Dropout(dropout)
            if content:
                spec = ContentSpec.from_dict(content)
                self.item_content = ItemContentEncoder(spec.buckets, len(spec.numeric), half,
                                                       name="item_content")
                self.item_content.build()
                # as the retriever's (``SASRecEncoder``): unseeded only where it draws
                self.seeds = keras.random.SeedGenerator(None if id_dropout > 0 else 2)
                self.catalogue = ItemContentTable(self, num_items + 1, spec, id_dropout,
                                                  self.seeds)
        self.out = keras.layers.Dense(1 if self.conditional else len(self.tasks),
                                      name="fusion")
        if self.conditional:
            self.given = keras.layers.Dense(len(self.tasks) - 1, name="given")

    def branch_outputs(self, inputs: dict[str, Any], training: bool = False) -> list[Any]:
        parts, keep, content = [], None, None
        if self.content:
            tokens, numeric = self.catalogue.lookup(inputs["item"])
            keep = self.catalogue.keep(tokens, numeric, training)
            content = self.item_content(tokens, numeric)
        if self.branch in ("both", "gmf"):
            item = self.gmf_item(inputs["item"])
            parts.append(self.gmf_user(inputs["user"]) * (item if keep is None else item * keep))
        if self.branch in ("both", "mlp"):
            item = self.mlp_item(inputs["item"])
            if keep is not None:
                item = item * keep
            x = [self.mlp_user(inputs["user"]), item if content is None else item + content]
            if self.session_dim:
                x.append(ops.cast(inputs["session"], "float32"))
            if self.context_dim:
                x.append(ops.cast(inputs["context"], "float32"))
            if self.categories:
                x.append(ops.sum(self.category_table(self.category_offsets(
                    inputs["categories"])), axis=1))
            if self.pair_dim:
                x.append(ops.cast(inputs["pair"], "float32"))
            h = ops.concatenate(x, axis=-1)
            for layer in self.mlp:
                h = self.drop(layer(h), training=training)
            parts.append(h)
        return parts

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        parts = self.branch_outputs(inputs, training)
        score, pair = self._per_candidate(inputs)
        logits = self.out(ops.concatenate(parts + score + (pair if self.wide else []), axis=-1))
        if not self.conditional:
            return logits
        return ops.concatenate([logits, self.given(self.given_inputs(parts[-1], inputs))],
                               axis=-1)

    def _per_candidate(self, inputs: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        """([the retrieval score], [the pair features]), each empty when not an input."""
        score = ([ops.reshape(ops.cast(inputs["score"], "float32"), (-1, 1))]
                 if self.use_score else [])
        return score, [ops.cast(inputs["pair"], "float32")] if self.pair_dim else []

    def given_inputs(self, mlp: Any, inputs: dict[str, Any]) -> Any:
        """What the conditional heads read: the MLP's output, the score, the pair features
        and the newest event's context, in that order (``export_neumf`` splits it so)."""
        score, pair = self._per_candidate(inputs)
        context = [ops.cast(inputs["context"], "float32")] if self.context_dim else []
        return ops.concatenate([mlp, *score, *pair, *context], axis=-1)

    def given_features(self, inputs: dict[str, np.ndarray], batch_size: int = 4096
                       ) -> np.ndarray:
        """``given_inputs`` of flat rows, in inference mode: the fixed features on which
        ``model.ranking.training.refit_given`` fits the conditional heads alone."""
        out = []
        for start in range(0, len(inputs["item"]), batch_size):
            rows = {k: v[start:start + batch_size] for k, v in inputs.items()}
            out.append(ops.convert_to_numpy(self.given_inputs(self.branch_outputs(rows)[-1],
                                                              rows)))
        return np.concatenate(out)

    def set_content(self, table: ContentTable) -> None:
        """Load the catalogue's arrays for item ids 0..num_items."""
        self.catalogue.load(table)

    def silence_unused_context(self, context: np.ndarray) -> list[int]:
        """Zero the first MLP layer's weights of the context columns that are 0 in every
        row of ``context`` (the training rows' dense features): e.g. the one-hot column of
        an event type the log never held. Training cannot move them (their input is
        always 0), so they would keep their random start and shift every list of a user
        whose newest event sets them; zeroed, such a value changes nothing. Returns the
        columns zeroed. Call on a built model, after any warm start's weights (a
        champion's such columns never trained on these rows either)."""
        if not self.context_dim or self.branch == "gmf":
            return []
        unused = np.flatnonzero(~np.any(np.asarray(context) != 0, axis=0))
        kernel, bias = self.mlp[0].get_weights()
        kernel[self.mlp_layers[0] // 2 * 2 + self.session_dim + unused] = 0.0
        self.mlp[0].set_weights([kernel, bias])
        return unused.tolist()

    def forget_context(self) -> None:
        """Start what reads the newest event's context afresh: the first MLP layer's rows
        of the context columns and of the categories' sum, and the conditional heads' rows
        of the context, at zero (context then changes no score until training teaches
        it), the category table at new initial values (so those rows can learn). For a
        warm start from a ranker that read other context keys: weights are copied by
        shape, so with keys reordered, one added mid-list or other buckets, each column
        and bucket took another key's weights."""
        if self.branch == "gmf" or not (self.context_dim or self.categories):
            return
        kernel, bias = self.mlp[0].get_weights()
        start = self.mlp_layers[0] // 2 * 2 + self.session_dim
        kernel[start:start + self.context_dim + (CATEGORY_DIM if self.categories else 0)] = 0.0
        self.mlp[0].set_weights([kernel, bias])
        if self.conditional and self.context_dim:  # ``given_inputs`` end with the context
            kernel, bias = self.given.get_weights()
            kernel[-self.context_dim:] = 0.0
            self.given.set_weights([kernel, bias])
        if self.categories:
            table = self.category_table
            table.embeddings.assign(table.embeddings_initializer(table.embeddings.shape))

    def silence_unused_categories(self, categories: np.ndarray) -> int:
        """Zero the category table's rows no row of ``categories`` (the training rows'
        bucket ids, [rows, keys]) reads: a value training never met, or bucket 0 (the key
        missing) of a key every training event held. Like unused context columns they keep
        their random start and shifted the lists of users whose newest event read them;
        zeroed, such a value adds nothing. Returns the rows zeroed."""
        if not self.categories:
            return 0
        (rows,) = self.category_table.get_weights()
        used = np.zeros(len(rows), bool)
        used[np.asarray(self.category_offsets(np.asarray(categories))).ravel()] = True
        rows[~used] = 0.0
        self.category_table.set_weights([rows])
        return int((~used).sum())

    def forget_untrained(self, users: np.ndarray, items: np.ndarray, known_users: int = 0,
                         known_items: int = 0) -> tuple[int, int]:
        """Reset the id rows no training list held (``users``, ``items``: the ids the lists
        did hold), past the first ``known_users``/``known_items`` a warm start brought.
        Such a user takes row 0, the unknown user's, so it is scored as a new user is, not
        by a random row; such an item takes zeros, what an item known by content alone
        (its id dropped) reads in training. Returns how many users and items were reset.
        Call after training: row 0 learns until then."""
        def untrained(trained: np.ndarray, count: int, known: int) -> np.ndarray:
            rows = np.ones(count + 1, bool)
            rows[:known + 1] = False
            rows[np.asarray(trained, np.int64)] = False
            return np.flatnonzero(rows)

        lost_users = untrained(users, self.num_users, known_users)
        lost_items = untrained(items, self.num_items, known_items)
        for name in ID_TABLES:
            if (table := getattr(self, name, None)) is not None:
                (rows,) = table.get_weights()
                if name.endswith("user"):
                    rows[lost_users] = rows[0]
                else:
                    rows[lost_items] = 0.0
                table.set_weights([rows])
        return len(lost_users), len(lost_items)

    def category_offsets(self, ids: Any) -> Any:
        """Key k's bucket b -> row k * buckets + b of the one shared table."""
        return ops.cast(ids, "int32") + ops.arange(self.categories, dtype="int32") * self.buckets

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_users": self.num_users, "num_items": self.num_items,
                "gmf_dim": self.gmf_dim, "mlp_layers": list(self.mlp_layers),
                "session_dim": self.session_dim, "use_score": self.use_score,
                "context_dim": self.context_dim, "branch": self.branch,
                "dropout": self.dropout_rate, "categories": self.categories,
                "buckets": self.buckets, "pair_dim": self.pair_dim, "tasks": list(self.tasks),
                "features": self.features, "id_l2": self.id_l2, "content": self.content,
                "id_dropout": self.id_dropout, "wide": self.wide,
                "conditional": self.conditional, "fold_epochs": self.fold_epochs,
                "seen_window": self.seen_window, "retrieval_order": self.retrieval_order,
                "recommends_seen": self.recommends_seen}


def head_vector(tasks: tuple[str, ...], weights: Mapping[str, float] | None = None
                ) -> np.ndarray:
    """[len(tasks)] weights that combine a model's head logits into one score; tasks the
    mapping leaves out weigh 0. One head alone: that head."""
    weights = HEAD_WEIGHTS if weights is None else weights
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks in head weights: {unknown}; tasks are {TASKS}")
    vector = np.array([float(weights.get(t, 0.0)) for t in tasks], np.float32)
    return vector if len(tasks) > 1 else np.ones(1, np.float32)


def fuse_pretrained(gmf: NeuMF, mlp: NeuMF, alpha: float = 0.5) -> NeuMF:
    """The paper's initialisation: embeddings and MLP from the pretrained branches, the
    fusion layer as alpha * GMF's output weights and (1 - alpha) * MLP's."""
    cfg = {**mlp.get_config(), "branch": "both", "gmf_dim": gmf.gmf_dim}
    for key in ("name", "trainable", "dtype"):
        cfg.pop(key, None)
    fused = NeuMF(**cfg)
    sample = sample_inputs(fused)
    fused(sample), gmf(sample), mlp(sample)
    fused.gmf_user.set_weights(gmf.gmf_user.get_weights())
    fused.gmf_item.set_weights(gmf.gmf_item.get_weights())
    fused.mlp_user.set_weights(mlp.mlp_user.get_weights())
    fused.mlp_item.set_weights(mlp.mlp_item.get_weights())
    for mine, theirs in zip(fused.mlp, mlp.mlp):
        mine.set_weights(theirs.get_weights())
    (gk, gb), (mk, mb) = gmf.out.get_weights(), mlp.out.get_weights()
    extra = mk[mlp.mlp_layers[-1]:]  # the score's weight follows the MLP output
    kernel = ops.convert_to_numpy(ops.concatenate(
        [alpha * gk[:gmf.gmf_dim], (1 - alpha) * mk[:mlp.mlp_layers[-1]], extra], axis=0))
    fused.out.set_weights([kernel, alpha * gb + (1 - alpha) * mb])
    return fused


def start_from_score(model: NeuMF) -> NeuMF:
    """Initialise a reranker to reproduce its retriever: the fusion layer weighs the
    retrieval score 1 and every learned feature 0, so training learns corrections."""
    if not model.use_score:
        raise ValueError("start_from_score needs a model built with use_score=True")
    model(sample_inputs(model))
    kernel, bias = model.out.get_weights()
    kernel[:] = 0.0
    branch_width = (model.gmf_dim if model.branch in ("both", "gmf") else 0) + (
        model.mlp_layers[-1] if model.branch in ("both", "mlp") else 0)
    kernel[branch_width, :] = 1.0  # every head starts from the retrieval score
    model.out.set_weights([kernel, bias * 0.0])
    return model


def start_given(model: NeuMF, rates: np.ndarray) -> NeuMF:
    """Start the conditional heads at their base rates (``rates`` [heads], the share of
    training targets that converted): each predicts its rate for every item, which the
    features then correct. A zero bias would start at 50% and spend the short joint
    training (the next head's early stopping ends it) learning the rate alone."""
    if model.conditional:
        model(sample_inputs(model))
        kernel, _ = model.given.get_weights()
        p = np.clip(np.asarray(rates, np.float64), 1e-4, 1 - 1e-4)
        model.given.set_weights([kernel * 0.0, np.log(p / (1 - p)).astype(np.float32)])
    return model


def sample_inputs(model: NeuMF) -> dict[str, Any]:
    """One row of valid inputs for ``model`` (to build it, or for a signature)."""
    sample: dict[str, Any] = {"user": ops.zeros((1,), "int32"), "item": ops.ones((1,), "int32")}
    if model.session_dim:
        sample["session"] = ops.zeros((1, model.session_dim))
    if model.use_score:
        sample["score"] = ops.zeros((1, 1))
    if model.context_dim:
        sample["context"] = ops.zeros((1, model.context_dim))
    if model.categories:
        sample["categories"] = ops.zeros((1, model.categories), "int32")
    if model.pair_dim:
        sample["pair"] = ops.zeros((1, model.pair_dim))
    return sample
