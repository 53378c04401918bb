"""Train the named models on one split and evaluate them alike: the engine behind
``streamrec train`` and ``streamrec evaluate``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from model.data import LeaveLastOut, Sequences
from model.evaluation.baselines import ImplicitALS, ItemKNN, Popularity
from model.evaluation.cold import (
    CategoryPopularity,
    ColdItems,
    RandomScores,
    WithColdItems,
    cold_scorer,
    evaluate_cold,
)
from model.evaluation.metrics import binary_auc
from model.evaluation.protocols import Scorer, evaluate, evaluate_cases, evaluate_next_click
from model.experiments.statistics import bootstrap_interval
from model.fitting import TrainResult
from model.pipeline import PipelineScorer
from model.ranking.training import NeuMFConfig, NeuMFScorer, fit_neumf, fit_ranker
from model.retrieval.index import IndexConfig, ItemIndex
from model.retrieval.training import SASRecConfig, SASRecScorer, fit_sasrec

MODELS = ("popularity", "itemknn", "mf", "sasrec", "neumf", "pipeline")
Progress = Callable[[str, int, dict[str, float]], None]  # (model, epoch, curve point)


@dataclass
class Trained:
    name: str
    scorer: Scorer
    train_s: float
    result: TrainResult | None = None  # for neural models: curve, best epoch, best weights
    index: ItemIndex | None = None


def train_models(split: LeaveLastOut, names: list[str], sasrec_cfg: SASRecConfig = SASRecConfig(),
                 neumf_cfg: NeuMFConfig = NeuMFConfig(), index_cfg: IndexConfig = IndexConfig(),
                 progress: Progress | None = None,
                 init: dict[str, keras.Model] | None = None) -> dict[str, Trained]:
    """Train each named model once; ``pipeline`` reuses the trained ``sasrec`` as its
    retriever. ``init`` maps a role (``retriever``, ``ranker``) to a model to warm-start
    that role from."""
    init = init or {}
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    n_items = split.sequences.num_items
    out: dict[str, Trained] = {}

    def report(name: str) -> Callable[[int, dict[str, float]], None] | None:
        return (lambda epoch, point: progress(name, epoch, point)) if progress else None

    for name in names:
        start = time.perf_counter()
        if name in ("popularity", "itemknn", "mf"):
            model = {"popularity": Popularity, "itemknn": ItemKNN, "mf": ImplicitALS}[name]()
            out[name] = Trained(name, model.fit(split.train, n_items),
                                time.perf_counter() - start)
        elif name == "neumf":
            res = fit_neumf(split, neumf_cfg, report(name))
            out[name] = Trained(name, NeuMFScorer(res.model), time.perf_counter() - start, res)
        elif name in ("sasrec", "pipeline") and "sasrec" not in out:
            res = fit_sasrec(split, sasrec_cfg, report("sasrec"), init=init.get("retriever"))
            table = keras.ops.convert_to_numpy(res.model.item_embeddings())
            out["sasrec"] = Trained("sasrec", SASRecScorer(res.model),
                                    time.perf_counter() - start, res,
                                    ItemIndex.build(table, index_cfg))
        if name == "pipeline":
            sasrec = out["sasrec"]
            assert sasrec.result is not None and sasrec.index is not None
            start = time.perf_counter()
            res = fit_ranker(split, sasrec.scorer, sasrec.index, sasrec_cfg,  # type: ignore[arg-type]
                             sasrec.result.best_epoch, neumf_cfg, report(name),
                             init=init.get("ranker"))
            scorer = PipelineScorer(sasrec.scorer, sasrec.index, res.model,  # type: ignore[arg-type]
                                    neumf_cfg.candidates, exclude_seen=False,
                                    head_weights=neumf_cfg.head_weights)
            out[name] = Trained(name, scorer,
                                sasrec.train_s + time.perf_counter() - start, res)
    return {name: out[name] for name in names}


def conversion_report(pipeline: PipelineScorer, split: LeaveLastOut, stage: str = "test"
                      ) -> dict[str, dict[str, float]]:
    """Per head, on the ``stage`` cases whose target event converted (a cart add or
    purchase, or a liked rating): full-ranking AUC and NDCG@10 with that head alone, and
    with the served combination; and ``converts AUC``: over every case whose true next
    item is among the candidates, how well the head's score of that item tells the events
    that converted from the rest (what a conversion head is for: the next-item head need
    not know which of a user's next items will be bought). Empty when there are no such
    cases or one head."""
    everyone = split.eval_users(stage)
    converted = split.converted(everyone, stage)
    users = everyone[converted]
    if not len(users) or len(pipeline.ranker.tasks) < 2:
        return {}
    targets = np.array([split.target(u, stage) for u in users])
    histories = [split.history(u, stage) for u in users]
    side = split.side(users, stage)
    variants = {**{f"{t} head": {t: 1.0} for t in pipeline.ranker.tasks}, "served": None}
    targets_logits = _target_logits(pipeline, split, everyone, stage)  # once for all heads
    found = ~np.isnan(targets_logits[:, 0])
    labels, next_head = converted[found], targets_logits[found, 0]
    out = {}
    for name, weights in variants.items():
        scorer = pipeline.with_heads(weights) if weights is not None else pipeline
        full = evaluate_cases(scorer, users, histories, targets, split.sequences.num_items,
                              side=side)["full"]
        target = targets_logits[found] @ scorer.heads
        out[name] = {"AUC": full["AUC"], "NDCG@10": full["NDCG@10"], "cases": int(len(users)),
                     "converts AUC": binary_auc(target, labels)}
        if name != "next head":
            out[name].update(_auc_gain(target, next_head, labels))
    return out


def _auc_gain(scores: np.ndarray, baseline: np.ndarray, labels: np.ndarray,
              level: float = 0.95) -> dict[str, float]:
    """How much better ``scores`` tell ``labels`` than ``baseline`` does, on the same cases
    (converts AUC minus the next head's), with its paired bootstrap interval: with ~80
    converting cases the AUCs themselves move by a few points between resamples."""
    def gain(rows: np.ndarray) -> float:
        rows = rows.astype(int)
        return binary_auc(scores[rows], labels[rows]) - binary_auc(baseline[rows], labels[rows])

    if labels.all() or not labels.any():  # no AUC without both kinds of case
        return dict.fromkeys(("converts AUC gain", "converts AUC gain low",
                              "converts AUC gain high"), float("nan"))
    low, high = bootstrap_interval(np.arange(len(labels)), gain, level, n=1000, rng=0,
                                   strata=labels)  # both kinds in every resample
    return {"converts AUC gain": gain(np.arange(len(labels))), "converts AUC gain low": low,
            "converts AUC gain high": high}


def _target_logits(pipeline: PipelineScorer, split: LeaveLastOut, users: np.ndarray,
                   stage: str, batch: int = 256) -> np.ndarray:
    """[cases, tasks]: each head's logit of the case's true next item; NaN where that
    item is no candidate."""
    out = []
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        histories = [split.history(u, stage) for u in rows]
        side = split.side(rows, stage)
        logits, found = pipeline.head_logits(rows, pipeline.sasrec.embed(histories, side),
                                             histories, side)
        hit = found.ids == np.array([split.target(u, stage) for u in rows])[:, None]
        picked = np.einsum("bw,bwt->bt", hit.astype(logits.dtype), logits)
        out.append(np.where(hit.any(1)[:, None], picked, np.nan))
    return np.concatenate(out)


def cold_items_report(cold: ColdItems, trained: dict[str, Trained],
                      categories: Mapping[str, Sequence[str]]) -> dict:
    """Per model, both protocols on the cold-item cases; beside them the two baselines."""
    def block(scorer: Scorer) -> dict:
        result = evaluate_cold(scorer, cold)
        return {"sampled": result["sampled"], "full": result["full"], "cases": result["users"]}

    def model_block(scorer: Scorer) -> dict:  # how it placed the cold items: said, not guessed
        return {**block(scorer),
                "scored": "content" if isinstance(scorer, WithColdItems) else "last"}

    return {"models": {name: model_block(cold_scorer(t.scorer, cold))
                       for name, t in trained.items()},
            "baselines": {"category-popularity": block(CategoryPopularity(cold, categories)),
                          "random": block(RandomScores(cold.num_items))},
            "cold_items": int(len(cold.cold)), "cases": int(len(cold.users))}


def leave_last_out_report(dataset: str, split: LeaveLastOut, trained: dict[str, Trained],
                          cold: ColdItems | None = None,
                          categories: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The ``streamrec evaluate`` JSON: both protocols on the test stage per model, and
    with ``cold`` (the cold-item protocol) each model's ``cold_items`` block."""
    seqs = split.sequences
    models = {}
    for name, t in trained.items():
        result = evaluate(t.scorer, split, "test")
        models[name] = {"sampled": result["sampled"], "full": result["full"],
                        "train_s": round(t.train_s, 2)}
        if t.result is not None:
            models[name]["best_epoch"] = t.result.best_epoch
            models[name]["valid_full_ndcg10"] = t.result.valid_ndcg10
        if isinstance(t.scorer, SASRecScorer):
            encoder = t.scorer.model.encoder
            models[name]["dropout"] = encoder.dropout  # the log's, when unset
            if encoder.content_spec:
                models[name]["content_mode"] = encoder.content_spec.mode  # "auto"'s pick
        if isinstance(t.scorer, PipelineScorer) and (tasks := conversion_report(t.scorer, split)):
            models[name]["conversion"] = tasks
    report = {"dataset": dataset, "protocol": "leave-last-out by time (ties: file order); "
              "sampled = 100 uniform unseen negatives; full = all unseen items",
              "users": seqs.num_users, "items": seqs.num_items,
              "interactions": seqs.interactions(),
              "evaluated_users": int(len(split.eval_users("test"))),
              "catalogue_items": seqs.content.covered if seqs.content is not None else 0,
              "models": models}
    if cold is not None:
        found = cold_items_report(cold, trained, categories or {})
        for name, block in found.pop("models").items():
            models[name]["cold_items"] = block
        report["cold_items"] = found
        report["protocol"] += ("; cold items: a random 10% of catalogued items left out of "
                               "training, each user's last event on one ranked among all items")
    return report


def next_click_report(dataset: str, train: Sequences, test_sessions: list[np.ndarray],
                      trained: dict[str, Trained], k: int = 20) -> dict:
    """Session-based protocol on separate test sessions (YooChoose, DIGINETICA)."""
    models = {}
    for name, t in trained.items():
        models[name] = {**evaluate_next_click(t.scorer, test_sessions, k),
                        "train_s": round(t.train_s, 2)}
    return {"dataset": dataset, "protocol": f"next click of every test-session prefix, "
            f"ranked among all items; Recall@{k}, MRR@{k}; test items unseen in training dropped",
            "sessions_train": train.num_users, "items": train.num_items,
            "sessions_test": len(test_sessions), "models": models}
