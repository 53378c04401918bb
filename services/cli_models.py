"""``streamrec train | evaluate``: fit models on a log, log them to MLflow, compare them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.cli_events import Format
from services.progress import progress_bar
from services.settings import Settings, load_settings
from services.stack import mlflow_store
from streams.readers import read_valid_events

if TYPE_CHECKING:  # imported lazily at run time: TensorFlow takes seconds to import
    from model.data import IdMap, Sequences

app = typer.Typer()
console = Console()

TRAIN_CHOICES = {"sasrec": ["sasrec"], "neumf": ["neumf"], "all": ["sasrec", "pipeline"]}


def _load(path: Path, fmt: Format, items: IdMap | None = None) -> Sequences:
    """Sequences of a log; with ``items`` given, only items it knows (others become 0)."""
    from model.data import build_sequences

    events = read_valid_events(path, fmt.value)
    if not events:
        raise typer.BadParameter(f"{path} holds no valid events in format {fmt.value}")
    return build_sequences(events, items=items, grow_items=items is None)


def _configs(epochs: int | None, seed: int, pretrain: bool):  # type: ignore[no-untyped-def]
    from model.neumf_training import NeuMFConfig
    from model.training import SASRecConfig

    sasrec, neumf = SASRecConfig(seed=seed), NeuMFConfig(seed=seed, pretrain=pretrain)
    if epochs is not None:
        sasrec = SASRecConfig(seed=seed, epochs=epochs, eval_every=min(5, epochs))
        neumf = NeuMFConfig(seed=seed, epochs=epochs, eval_every=min(2, epochs),
                            pretrain=pretrain)
    return sasrec, neumf


def _train(split, names: list[str], epochs: int | None, seed: int,  # type: ignore[no-untyped-def]
           pretrain: bool = False):
    from model.harness import train_models

    sasrec_cfg, neumf_cfg = _configs(epochs, seed, pretrain)
    total = max(sasrec_cfg.epochs, neumf_cfg.epochs)
    fields = "loss {task.fields[loss]:.4f}  valid NDCG@10 {task.fields[ndcg]:.4f}"
    with progress_bar("train", total, fields) as update:
        def show(name: str, epoch: int, point: dict[str, float]) -> None:
            update(epoch, description=name, loss=point.get("loss", 0.0),
                   ndcg=point.get("valid_ndcg10", 0.0))
        update(0, loss=0.0, ndcg=0.0)
        trained = train_models(split, names, sasrec_cfg, neumf_cfg, progress=show)
    return trained, sasrec_cfg, neumf_cfg


def _table(report: dict) -> Table:
    """Metrics as rows, models as columns: fits a terminal with six models."""
    models = report["models"]
    table = Table("metric", *models, title=f"{report['dataset']}\n{report['protocol']}")
    first = next(iter(models.values()))
    rows = [(f"{proto} {m}", proto, m) for proto in ("sampled", "full") if proto in first
            for m in first[proto]]
    rows += [(m, None, m) for m, v in first.items() if isinstance(v, (int, float))]
    for label, proto, metric in rows:
        cells = [(row[proto] if proto else row).get(metric) for row in models.values()]
        table.add_row(label, *[f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells])
    return table


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="interaction log to train (and test) on")],
    fmt: Annotated[Format, typer.Option("--format", "-f")],
    models: Annotated[str, typer.Option(help="comma-separated")] =
        "popularity,itemknn,mf,sasrec,neumf,pipeline",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    test: Annotated[Path | None, typer.Option(
        help="separate test sessions: next-click protocol instead of leave-last-out")] = None,
    epochs: Annotated[int | None, typer.Option(help="cap epochs (default: early stopping)")] = None,
    pretrain: Annotated[bool, typer.Option(
        help="neumf: pretrain GMF and MLP alone, then fuse them (He et al. 2017)")] = False,
    seed: int = 42,
) -> None:
    """Train each model on the train split and score it with both protocols."""
    from model.data import leave_last_out
    from model.harness import leave_last_out_report, next_click_report

    names = [m.strip() for m in models.split(",") if m.strip()]
    seqs = _load(data, fmt)
    split = leave_last_out(seqs)
    console.print(f"{data.name}: {seqs.num_users:,} users, {seqs.num_items:,} items, "
                  f"{seqs.interactions():,} interactions")
    trained, _, _ = _train(split, names, epochs, seed, pretrain)
    if test is None:
        report = leave_last_out_report(f"{data.parent.name}/{data.name}", split, trained)
    else:
        sessions = [s[s > 0] for s in _load(test, fmt, items=seqs.items).by_user]
        report = next_click_report(f"{data.parent.name}/{data.name}", seqs,
                                   [s for s in sessions if len(s) >= 2], trained)
    console.print(_table(report))
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_out}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="interaction log to train on")],
    fmt: Annotated[Format, typer.Option("--format", "-f")],
    model: Annotated[str, typer.Option(help="sasrec | neumf | all (SASRec + NeuMF reranker)")]
        = "all",
    champion: Annotated[bool, typer.Option(help="point the 'champion' alias at the new versions")]
        = False,
    register: Annotated[bool, typer.Option(help="register in the MLflow model registry")] = True,
    epochs: Annotated[int | None, typer.Option(help="cap epochs (default: early stopping)")] = None,
    pretrain: Annotated[bool, typer.Option(
        help="neumf: pretrain GMF and MLP alone, then fuse them (He et al. 2017)")] = False,
    seed: int = 42,
) -> None:
    """Train, log to MLflow (config, commit, curves, model, signature), register."""
    from model.data import leave_last_out
    from model.evaluation import evaluate as score
    from model.registry import ENCODER_NAME, NEUMF_NAME, RANKER_NAME, log_run

    registered = {"sasrec": ENCODER_NAME, "neumf": NEUMF_NAME, "pipeline": RANKER_NAME}

    if model not in TRAIN_CHOICES:
        raise typer.BadParameter(f"--model must be one of {', '.join(TRAIN_CHOICES)}")
    settings = load_settings()
    seqs = _load(data, fmt)
    split = leave_last_out(seqs)
    trained, sasrec_cfg, neumf_cfg = _train(split, TRAIN_CHOICES[model], epochs, seed, pretrain)
    store = mlflow_store(settings)
    store.ensure()
    announced: dict[str, str] = {}
    for name, t in trained.items():
        assert t.result is not None
        result = score(t.scorer, split, "test")
        metrics = {f"test_{p}_{m}".replace("@", "_at_"): v for p in ("sampled", "full")
                   for m, v in result[p].items()}
        keras_model = t.result.model
        example = _example_inputs(name, keras_model, sasrec_cfg.max_len)
        cfg = sasrec_cfg if name == "sasrec" else neumf_cfg
        versions = log_run(
            store, settings.mlflow_experiment, f"{name}-{data.stem}",
            params={**cfg.to_dict(), "data": str(data), "format": fmt.value, "model": name,
                    "users": seqs.num_users, "items": seqs.num_items},
            curve=t.result.curve, metrics=metrics,
            models={registered[name]: (keras_model, example)},
            artifacts={"id_maps.json": {"users": seqs.users.to_list(),
                                        "items": seqs.items.to_list()}},
            register=register, champion=champion and register)
        announced.update(versions)
        console.print(f"{name}: test full NDCG@10 {result['full']['NDCG@10']:.4f}, sampled "
                      f"HR@10 {result['sampled']['HR@10']:.4f}; best epoch {t.result.best_epoch}"
                      + "".join(f"; registered {n} v{v}" for n, v in versions.items())
                      + (" (champion)" if champion and versions else ""))
    if champion and announced:
        _announce(settings, announced)


def _announce(settings: Settings, versions: dict[str, str]) -> None:
    """Tell running workers that the champion moved (they reload it in the background)."""
    from confluent_kafka import Producer

    from streams.producer import PRODUCER_DEFAULTS

    message = orjson.dumps({"alias": "champion", "versions": versions,
                            "tracking_uri": settings.mlflow_uri})
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": settings.kafka_servers})
    producer.produce(settings.topic_model_updates, message, b"champion")
    if producer.flush(10):
        console.print("[yellow]warning:[/] could not announce the new champion on "
                      f"{settings.topic_model_updates}; workers keep the old one until restarted")
    else:
        console.print(f"announced on {settings.topic_model_updates}: {versions}")


def _example_inputs(name: str, keras_model, max_len: int) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """A small batch of valid inputs: MLflow infers the signature from it."""
    if name == "sasrec":
        seq = np.zeros((2, max_len), dtype=np.int64)
        seq[:, -3:] = [[1, 2, 3], [2, 3, 4]]
        return {"seq": seq, "pos": np.roll(seq, -1, axis=1), "neg": np.ones((2, 5), np.int64)}
    example = {"user": np.array([1, 0], np.int32), "item": np.array([1, 2], np.int32)}
    if keras_model.session_dim:
        example["session"] = np.zeros((2, keras_model.session_dim), np.float32)
    if keras_model.use_score:
        example["score"] = np.zeros((2, 1), np.float32)
    return example
