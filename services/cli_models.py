"""``streamrec train | evaluate``: fit models on a log, log them to MLflow, compare them."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from infra.mlflow_store import wait_for_mlflow
from services.cli_events import Columns, Format, Seed, columns_of
from services.logs import configure
from services.settings import Settings, load_settings
from services.stack import mlflow_store
from services.trainer import TRAINED_UNTIL, Recipe, as_of
from services.training_run import train_with_progress
from streams.catalog_files import CATALOG_FORMATS
from streams.readers import read_valid_events
from streams.status import now_us

if TYPE_CHECKING:  # imported lazily at run time: TensorFlow takes seconds to import
    from model.data import IdMap, Sequences
    from services.trainer import Trainer
    from streams.catalog import ItemRecord
    from streams.events import Event

app = typer.Typer()
console = Console()
errors = Console(stderr=True)

ITEMS_FORMAT_HELP = f"the catalogue's format: {', '.join(CATALOG_FORMATS)}"
TRAIN_CHOICES = {"sasrec": ["sasrec"], "neumf": ["neumf"], "all": ["sasrec", "pipeline"]}


class Protocol(StrEnum):
    leave_last_out = "leave-last-out"
    cold_items = "cold-items"


def _catalogue(path: Path | None, fmt: str | None) -> list[ItemRecord]:
    """The records of a catalogue file (none without ``--items``)."""
    from streams.catalog_files import read_catalog

    if path is None:
        if fmt is not None:
            raise typer.BadParameter("--items-format needs --items")
        return []
    if fmt not in CATALOG_FORMATS:
        raise typer.BadParameter(f"--items-format must be one of {', '.join(CATALOG_FORMATS)}")
    return list(read_catalog(path, fmt))


def _settings(command: str) -> Settings:
    """The settings; piped or in CI, where the progress bar is silent, logging at info,
    so each evaluated epoch says so (``train_with_progress``): a long run was mute."""
    settings = load_settings()
    if not errors.is_terminal:
        configure(settings.log_format, "info", command)
    return settings


def _events(path: Path, fmt: Format, columns: Sequence[str] = ()) -> list[Event]:
    """The valid events of a log, in time order; a log with none is a bad parameter.
    ``columns``: a headerless csv log's (``--columns``)."""
    events = read_valid_events(path, fmt.value, columns)
    if not events:
        raise typer.BadParameter(f"{path} holds no valid events in format {fmt.value}")
    return events


def _load(path: Path, fmt: Format, settings: Settings, items: IdMap | None = None,
          records: Sequence[ItemRecord] = (), columns: Sequence[str] = ()) -> Sequences:
    """Sequences of a log (``_sequences``)."""
    return _sequences(_events(path, fmt, columns), settings, items, records)


def _sequences(events: list[Event], settings: Settings, items: IdMap | None = None,
               records: Sequence[ItemRecord] = ()) -> Sequences:
    """Sequences of ``events``, with the settings' context features and the content of the
    catalogue ``records`` when there are any; with ``items`` given, only items it knows
    (others become 0)."""
    from model.data import build_sequences

    return build_sequences(events, items=items, grow_items=items is None,
                           spec=settings.feature_spec(), catalogue=records,
                           char_tokens=settings.content_char_tokens)


def _newest_ts(seqs: Sequences) -> int:
    """The newest event time of ``seqs`` (each user's events are in time order): what a
    champion trained here has seen, so the trainer's gate judges it on newer events only
    (``services.trainer.gate_cut``)."""
    return max((int(t[-1]) for t in seqs.times if len(t)), default=0)


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
    epochs: Annotated[int | None, typer.Option(
        min=1, help="cap epochs (default: early stopping)")] = None,
    pretrain: Annotated[bool, typer.Option(
        help="neumf: pretrain GMF and MLP alone, then fuse them (He et al. 2017)")] = False,
    protocol: Annotated[Protocol, typer.Option(
        help="cold-items: leave 10% of catalogued items out of training and rank them too "
             "(needs --items)")] = Protocol.leave_last_out,
    items: Annotated[Path | None, typer.Option(
        help="item catalogue: content features for the retriever")] = None,
    items_format: Annotated[str | None, typer.Option(
        help=ITEMS_FORMAT_HELP)] = None,
    seed: Seed = 42,
    columns: Columns = None,
) -> None:
    """Train each model on the train split and score it with both protocols."""
    from model.data import leave_last_out
    from model.evaluation.cold import cold_item_split
    from model.evaluation.harness import MODELS, leave_last_out_report, next_click_report

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        raise typer.BadParameter(f"unknown models {unknown}; choose from {', '.join(MODELS)}"
                                 if unknown else "name at least one model", param_hint="--models")
    if json_out is not None and not json_out.parent.is_dir():  # before any training
        raise typer.BadParameter(f"no folder {json_out.parent}", param_hint="--json")
    fields = columns_of(columns)
    settings = _settings("evaluate")
    records = _catalogue(items, items_format)
    cold = None
    if protocol is Protocol.cold_items:
        if not records or test is not None:
            raise typer.BadParameter("--protocol cold-items needs --items and no --test")
        events = _events(data, fmt, fields)
        try:
            cold = cold_item_split(events, records, settings.feature_spec(), seed=seed,
                                   char_tokens=settings.content_char_tokens)
        except ValueError as exc:  # e.g. no logged item has a record: ids of another scheme
            raise typer.BadParameter(str(exc), param_hint="--items") from exc
        if not len(cold.users):  # before training, which would end in an empty table
            raise typer.BadParameter(f"no user of {data} meets a cold item after another "
                                     "item: no case to rank", param_hint="--items")
        seqs = cold.sequences
        console.print(f"cold items: {len(cold.cold):,} left out of training, "
                      f"{len(cold.users):,} cases")
    else:
        seqs = _load(data, fmt, settings, records=records, columns=fields)
    split = leave_last_out(seqs)
    console.print(f"{data.name}: {seqs.num_users:,} users, {seqs.num_items:,} items, "
                  f"{seqs.interactions():,} interactions"
                  + (f"; {seqs.content.covered:,} items with content" if seqs.content else ""))
    # The test log is read before training, so a file that is not there or not in the
    # format stops the command at once, not after the models trained.
    sessions = ([] if test is None else
                [s[s > 0] for s in
                 _load(test, fmt, settings, items=seqs.items, columns=fields).by_user])
    sessions = [s for s in sessions if len(s) >= 2]
    if test is not None and not sessions:
        raise typer.BadParameter(f"no session of {test} holds two items {data} has: nothing "
                                 "to predict (ids of another scheme?)", param_hint="--test")
    trained, _, _ = train_with_progress(split, names, settings, epochs, seed, pretrain)
    if test is None:
        report = leave_last_out_report(f"{data.parent.name}/{data.name}", split, trained, cold,
                                       {r.item_id: r.categories for r in records})
    else:
        report = next_click_report(f"{data.parent.name}/{data.name}", seqs, sessions, trained)
    console.print(_table(report))
    if "cold_items" in report:
        cold_blocks = {name: m["cold_items"] for name, m in report["models"].items()}
        console.print(_table({"dataset": report["dataset"], "protocol": "cold items",
                              "models": {**cold_blocks, **report["cold_items"]["baselines"]}}))
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_out}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="interaction log to train on")],
    fmt: Annotated[Format, typer.Option("--format", "-f")],
    model: Annotated[str, typer.Option(help="sasrec | neumf | all (SASRec + NeuMF reranker)")]
        = "all",
    champion: Annotated[bool, typer.Option(
        help="point the 'champion' alias at the new versions; once there is a champion, "
             "only through the trainer's gate (exit 1 with its reason when refused)")] = False,
    force: Annotated[bool, typer.Option(
        help="with --champion: promote without the gate")] = False,
    register: Annotated[bool, typer.Option(help="register in the MLflow model registry")] = True,
    epochs: Annotated[int | None, typer.Option(
        min=1, help="cap epochs (default: early stopping)")] = None,
    pretrain: Annotated[bool, typer.Option(
        help="neumf: pretrain GMF and MLP alone, then fuse them (He et al. 2017)")] = False,
    items: Annotated[Path | None, typer.Option(
        help="item catalogue: content features for the retriever, so the served model "
             "can embed new items")] = None,
    items_format: Annotated[str | None, typer.Option(
        help=ITEMS_FORMAT_HELP)] = None,
    seed: Seed = 42,
    columns: Columns = None,
) -> None:
    """Train, log to MLflow (config, commit, curves, model, signature), register. With
    ``--champion`` and a champion already in the registry, the new model must pass the
    trainer's gate first, unless ``--force``."""
    from model.data import leave_last_out
    from streams.registry import log_trained

    if model not in TRAIN_CHOICES:
        raise typer.BadParameter(f"--model must be one of {', '.join(TRAIN_CHOICES)}")
    if force and not champion:  # each was ignored, and the command said nothing of it
        raise typer.BadParameter("--force promotes past the gate: it goes with --champion")
    if champion and not register:
        raise typer.BadParameter("--champion promotes the versions it registers: it cannot "
                                 "go with --no-register")
    if champion and model != "all":
        raise typer.BadParameter("the champion is a retriever and a ranker, trained on the "
                                 "same id maps and promoted together: --champion needs "
                                 "--model all")
    fields = columns_of(columns)
    source = {"data": str(data), "format": fmt.value, **({"columns": ",".join(fields)}
                                                          if fields else {})}
    settings = _settings("train")
    records = _catalogue(items, items_format)
    if champion and not force:
        _lock_reachable(settings)  # before training, not after: promotion takes its lock
    store = mlflow_store(settings)
    store.ensure()
    if not store.is_local:  # likewise: the models are logged there (a local store answers)
        wait_for_mlflow(store, timeout_s=10.0)
    # Times ahead of the clock left out, as the trainer does: learnt by a champion, one
    # would stay newer than what it learnt, and the trainer's gate slices would hold it,
    # or nothing, until the clock passed it.
    events, ahead = as_of(_events(data, fmt, fields), now_us() // 1000)
    if ahead and not events:
        raise typer.BadParameter(f"every event of {data} is stamped ahead of this machine's "
                                 "clock: nothing to train on before then")
    if ahead:
        console.print(f"[yellow]{ahead:,} events stamped ahead of this machine's clock are "
                      "left out: a later round learns them[/yellow]")
    if champion and not force and (gate := _gatekeeper(settings, seed)):
        _through_the_gate(gate, events, Recipe(epochs, False, data.stem, source, pretrain),
                          records)
        return
    seqs = _sequences(events, settings, records=records)
    split = leave_last_out(seqs)
    trained, sasrec_cfg, neumf_cfg = train_with_progress(split, TRAIN_CHOICES[model], settings,
                                                         epochs, seed, pretrain)
    logged = log_trained(store, settings.mlflow_experiment, trained, split, data.stem,
                         {"sasrec": sasrec_cfg.to_dict(), "neumf": neumf_cfg.to_dict()},
                         {**source, TRAINED_UNTIL: _newest_ts(seqs)}, register=register)
    announced = {n: v for run in logged.values() for n, v in run.versions.items()}
    if champion and announced and not force:
        _first_champion(settings, announced)
    elif champion and announced:  # once all are registered: a worker loading between
        _forced(settings, announced)  # two would pair the wrong maps
    for name, run in logged.items():
        console.print(f"{name}: test full NDCG@10 {run.test['full']['NDCG@10']:.4f}, sampled "
                      f"HR@10 {run.test['sampled']['HR@10']:.4f}; best epoch {run.best_epoch}"
                      + "".join(f"; registered {n} v{v}" for n, v in run.versions.items())
                      + (" (champion)" if champion and run.versions else ""))


def _lock_reachable(settings: Settings) -> None:
    """Refuse in one line, before any training, when Redis (where the trainer's promotion
    lock lives) does not answer: ``--force`` promotes without it."""
    from infra.errors import StackError
    from infra.redis_server import probe_redis

    if (why := probe_redis(settings.redis, timeout_s=5.0)) is not None:
        raise StackError(f"--champion promotes under the trainer's lock in Redis, which did "
                         f"not answer ({why}): start it (streamrec stack up), or --force")


def _first_champion(settings: Settings, versions: dict[str, str]) -> None:
    """Promote the first champion as the trainer does (its lock, a compare-and-set against
    no champion, the announcement): a long-running trainer's first round may have
    promoted one while this command trained, and that one must not be overwritten
    without the gate. Refused: one line, exit 1 (the models stay registered)."""
    from services.trainer import Trainer
    from streams.messages import version_string

    promoted, note = Trainer(settings).promote(versions, None)
    if not promoted:
        errors.print(f"{version_string(versions)} registered, not promoted: {note}; run again "
                     "to go through the gate, or --force", soft_wrap=True, markup=False,
                     highlight=False)
        raise typer.Exit(1)
    console.print(note or f"announced on {settings.topic_model_updates}: {versions}",
                  markup=False, highlight=False)


def _gatekeeper(settings: Settings, seed: int) -> Trainer | None:
    """A trainer to judge the new model by, when the registry has a champion; None for
    the first one, which has nothing to be compared with. It promotes by the offline gate
    whatever ``trainer_promotion`` says: a live trial outlives this command, and is the
    long-running trainer's to conclude."""
    from services.trainer import Trainer

    trainer = Trainer(settings.model_copy(update={"trainer_promotion": "gate"}), seed=seed)
    return trainer if trainer.champion_versions() is not None else None


def _through_the_gate(trainer: Trainer, events: list[Event], recipe: Recipe,
                      records: list[ItemRecord]) -> None:
    """``train --champion`` against a champion: the trainer's round on the file
    (``services.trainer.Trainer.round_on``) with a fresh model as ``recipe`` says: the
    newest events held out, the model trained on the rest, judged against the champion
    on them by the same gate, refit on everything when it passes, then registered and
    promoted. Refused (the models registered all the same, tagged with why) or skipped
    (no event newer than the champion's, nothing trained): one line with the reason,
    exit 1."""
    from services.trainer import describe_round

    summary = trainer.round_on(events, records, recipe)
    if summary.outcome != "promoted":
        errors.print(f"{describe_round(summary)}; --force promotes without the gate",
                     soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(1)
    console.print(describe_round(summary), soft_wrap=True, markup=False, highlight=False)


def _forced(settings: Settings, versions: dict[str, str]) -> None:
    """Promote past the gate as ``experiment conclude --promote`` does (the alias moved,
    then announced), and say whether running workers heard of it."""
    from services.champion import promote
    from streams.experiment_control import ExperimentConflict
    from streams.messages import version_string

    try:
        announced = promote(settings, versions)
    except ExperimentConflict:  # its advice (conclude again) is an experiment's
        errors.print(f"{version_string(versions)} registered, not promoted: another promotion "
                     "holds the lock (a trainer's, or an experiment's conclusion); run again "
                     "later", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(1) from None
    if announced:
        console.print(f"announced on {settings.topic_model_updates}: {versions}")
    else:
        console.print("[yellow]warning:[/] could not announce the new champion on "
                      f"{settings.topic_model_updates}; workers keep the old one until restarted")
