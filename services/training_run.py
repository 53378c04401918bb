"""Training with visible progress, shared by ``streamrec train | evaluate`` and the trainer:
a bar in a terminal, one log line per evaluated epoch otherwise."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from infra.errors import StackError
from services.progress import progress_bar
from services.settings import Settings

if TYPE_CHECKING:  # imported lazily at run time: TensorFlow takes seconds to import
    import keras

    from model.data import LeaveLastOut
    from model.evaluation.harness import Trained
    from model.ranking.training import NeuMFConfig
    from model.retrieval.training import SASRecConfig

log = logging.getLogger("streamrec.train")


def configs(settings: Settings, epochs: int | None, seed: int,
            pretrain: bool = False) -> tuple[SASRecConfig, NeuMFConfig]:
    """SASRec and NeuMF configs with the settings' event-type and task weights; ``epochs``
    caps training (default: early stopping)."""
    from model.ranking.training import NeuMFConfig
    from model.retrieval.training import SASRecConfig

    sasrec = SASRecConfig(seed=seed, type_weights=settings.type_weights(),
                          content_mode=settings.retriever_content_mode,
                          negatives=settings.retriever_negatives,
                          pool_negatives=settings.retriever_pool_negatives,
                          dropout=settings.retriever_dropout)
    neumf = NeuMFConfig(seed=seed, pretrain=pretrain,
                        task_weights=dict(settings.ranker_task_weights),
                        head_weights=dict(settings.ranker_head_weights),
                        seen_window=settings.session_max_items)
    if epochs is not None:
        sasrec = replace(sasrec, epochs=epochs, eval_every=min(5, epochs))
        neumf = replace(neumf, epochs=epochs, eval_every=min(2, epochs))
    return sasrec, neumf


def train_with_progress(split: LeaveLastOut, names: list[str], settings: Settings,
                        epochs: int | None, seed: int, pretrain: bool = False,
                        init: dict[str, keras.Model] | None = None,
                        ) -> tuple[dict[str, Trained], SASRecConfig, NeuMFConfig]:
    """``model.evaluation.harness.train_models`` with progress; returns (trained by model
    kind, the SASRec config, the NeuMF config). ``init`` maps a role (``retriever``,
    ``ranker``) to the model that role warm-starts from."""
    from model.data import EVALUATED_MIN
    from model.evaluation.harness import train_models
    from model.ranking.training import cross_fit_shortfall

    if not len(split.eval_users("valid")):  # early stopping would have nothing to read
        raise StackError(f"none of {len(split.train):,} users has {EVALUATED_MIN} events or "
                         "more: each model is validated on a user's second-to-last item and "
                         "tested on the last, with history before them")
    if "pipeline" in names and (short := cross_fit_shortfall(split.train)):
        raise StackError(f"{short}: too few users to train the ranker yet")
    sasrec_cfg, neumf_cfg = configs(settings, epochs, seed, pretrain)
    total = max(sasrec_cfg.epochs, neumf_cfg.epochs)
    fields = "loss {task.fields[loss]:.4f}  valid NDCG@10 {task.fields[ndcg]:.4f}"
    with progress_bar("train", total, fields) as update:
        def show(name: str, epoch: int, point: dict[str, float]) -> None:
            update(epoch, description=name, loss=point.get("loss", 0.0),
                   ndcg=point.get("valid_ndcg10", 0.0))
            if "valid_ndcg10" in point:  # epoch 0 (the start) has no loss: none said
                loss = f" loss={point['loss']:.4f}" if "loss" in point else ""
                log.info("train model=%s epoch=%d%s valid_ndcg10=%.4f", name, epoch, loss,
                         point["valid_ndcg10"])
        trained = train_models(split, names, sasrec_cfg, neumf_cfg, progress=show, init=init)
    return trained, sasrec_cfg, neumf_cfg
