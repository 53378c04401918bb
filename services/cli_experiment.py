"""``streamrec experiment start | status | stop | conclude``: experiments between live models
(``streams.experiment``; the rules live in ``streams.experiment_control``)."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.settings import Settings, load_settings
from services.stack import mlflow_store

if TYPE_CHECKING:  # imported in the commands: the statistics pull in Keras (seconds)
    from streams.experiment_report import ExperimentReport

app = typer.Typer(help="Experiments between live models: A/B tests and interleaving.",
                  no_args_is_help=True)
console = Console()


class Mode(StrEnum):
    ab = "ab"
    interleave = "interleave"


def _refuse(exc: Exception) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                               soft_wrap=True)
    raise typer.Exit(1)


def _redis(settings: Settings) -> object:
    """The workers' tallies live there (the local one unless STREAMREC_REDIS_URL)."""
    import redis

    return redis.Redis.from_url(settings.redis, socket_timeout=5)


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="the experiment's name (a-z, 0-9, _ . -)")],
    variant: Annotated[list[str], typer.Option(
        help="name=model:share, the first is the control; model: a registry alias "
             "(champion, challenger), versions (streamrec-retriever:v3+streamrec-ranker:v2) "
             "or popularity")],
    mode: Annotated[Mode, typer.Option(help="ab: each user sees their variant; interleave: "
                                       "everyone sees a team draft of two")] = Mode.ab,
    salt: Annotated[str | None, typer.Option(help="bucketing salt (default: the name)")] = None,
    holdback: Annotated[float, typer.Option(help="share of users kept out (champion, "
                                            "uncounted)")] = 0.0,
) -> None:
    """Start an experiment: every worker serves it within a second or two."""
    from streams.experiment_control import ExperimentRefused, new_experiment, parse_variant
    from streams.experiment_control import start as start_experiment

    settings = load_settings()
    try:
        experiment = new_experiment(name, [parse_variant(v) for v in variant], mode.value,
                                    salt, holdback)
        versions = start_experiment(settings.kafka, settings.topic_experiments,
                                    mlflow_store(settings), experiment, _redis(settings))
    except ExperimentRefused as exc:
        _refuse(exc)
    arms = ", ".join(f"{v.name}={versions[v.name]} ({v.share:.0%})" for v in experiment.variants)
    console.print(f"experiment {name} started ({mode.value}): {arms}"
                  + (f", holdback {holdback:.0%}" if holdback else ""), highlight=False)


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="the experiment (default: every one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Users, lists and metrics per variant with their intervals, the always-valid tests,
    the sample-ratio check and the verdict. Read it as often as you like."""
    from streams.experiment_control import ExperimentRefused, find
    from streams.experiment_report import status as look
    from streams.experiment_store import declarations

    settings = load_settings()
    try:
        found = ([find(settings.kafka, settings.topic_experiments, name)] if name else
                 list(declarations(settings.kafka, settings.topic_experiments).values()))
    except ExperimentRefused as exc:
        _refuse(exc)
    if not found:
        console.print("no experiments")
        return
    client = _redis(settings)
    for experiment in found:
        report = look(client, experiment)
        if as_json:
            print(orjson.dumps(report.to_dict(), default=str).decode())
        else:
            _print_report(report)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _print_report(report: ExperimentReport) -> None:
    e = report.experiment
    console.print(f"[bold]{e.name}[/] ({e.mode}, {e.state}), workers reporting: "
                  f"{report.workers}", highlight=False)
    if e.mode == "interleave":
        _print_interleaving(report)
    else:
        _print_variants(report)
    for v in report.variants:
        if v.served:
            served = ", ".join(f"{version} ({lists:,} lists)" for version, lists in
                               sorted(v.served.items(), key=lambda kv: -kv[1]))
            console.print(f"  {v.name} answered by: {served}", highlight=False)
    for key, t in report.tests.items():
        drifted = ("; [yellow]the effect moved between looks: no winner from it[/]"
                   if t.get("drifted") else "")
        console.print(f"  {key}: {t['verdict']}, always-valid p {_fmt(t['p_value'])}, "
                      f"estimate {_fmt(t['estimate'])} [{_fmt(t['low'])}, {_fmt(t['high'])}]"
                      f"{drifted}", highlight=False)
    if e.mode == "ab":
        srm = "MISMATCH: the split is broken" if report.sample_ratio_mismatch else "ok"
        console.print(f"  sample ratio: {srm} (p {_fmt(report.sample_ratio_p)})",
                      highlight=False)
    for variant, error in report.load_failures.items():
        console.print(f"  [yellow]variant {variant} failed to load in a worker[/] (a "
                      f"stand-in serves its users there: see 'answered by'): {error}",
                      highlight=False)
    winner = f", winner {report.winner}" if report.winner else ""
    console.print(f"  verdict: {report.verdict}{winner}", highlight=False)
    if e.winner:  # declared by ``conclude``, whatever the test says at this look
        console.print(f"  concluded: {e.winner} declared the winner", highlight=False)


def _print_interleaving(report: ExperimentReport) -> None:
    """Interleaved lists belong to no variant, so a variant table would read 0 users and
    0 lists: the credits are the figures, and the estimate is the first variant's share."""
    test = report.tests.get("interleaving", {})
    a, b = (v.name for v in report.variants)
    to_a, to_b = test.get("wins", (0, 0))
    console.print(f"  credits: {a} {to_a:,}, {b} {to_b:,}, from {test.get('users', 0):,} "
                  f"users; the estimate below is {a}'s share of the credits", highlight=False)


def _print_variants(report: ExperimentReport) -> None:
    table = Table("variant", "model", "users", "lists", "HR@10", "NDCG@10", "MRR", "click@5",
                  "conversion@5")
    for v in report.variants:
        cells = [f"{_fmt(m['mean'])} [{_fmt(m['low'])}, {_fmt(m['high'])}]" if m else "-"
                 for m in (v.metrics.get(k) for k in
                           ("HR@10", "NDCG@10", "MRR", "click@5", "conversion@5"))]
        table.add_row(v.name, v.model, f"{v.users:,}", f"{v.lists:,}", *cells)
    console.print(table)


@app.command()
def stop(name: Annotated[str, typer.Argument(help="the experiment")]) -> None:
    """Stop an experiment without a winner: workers go back to the champion alone."""
    from streams.experiment_control import ExperimentRefused
    from streams.experiment_control import stop as stop_experiment

    settings = load_settings()
    try:
        stop_experiment(settings.kafka, settings.topic_experiments, _redis(settings), name)
    except ExperimentRefused as exc:
        _refuse(exc)
    console.print(f"experiment {name} stopped; its figures stay readable with "
                  f"`streamrec experiment status {name}`", highlight=False)


@app.command()
def conclude(
    name: Annotated[str, typer.Argument(help="the experiment")],
    winner: Annotated[str | None, typer.Option(help="the winning variant (default: the "
                                               "test's verdict)")] = None,
    promote: Annotated[bool, typer.Option(help="make the winner's models the champion")] = False,
) -> None:
    """Stop an experiment with its winner; with ``--promote`` the winner becomes the
    champion and every worker swaps to it."""
    from services.champion import promote as make_champion
    from streams.experiment_control import ExperimentRefused
    from streams.experiment_control import conclude as conclude_experiment
    from streams.messages import version_string

    settings = load_settings()
    try:
        report, stopped, versions = conclude_experiment(
            settings.kafka, settings.topic_experiments, _redis(settings),
            mlflow_store(settings), name, winner, promote)
    except ExperimentRefused as exc:
        _refuse(exc)
    console.print(f"experiment {name} concluded: {stopped.winner} wins ({report.verdict})",
                  highlight=False)
    if versions:
        try:
            announced = make_champion(settings, versions)
        except ExperimentRefused as exc:
            _refuse(exc)
        console.print(f"champion is now {version_string(versions)}"
                      + ("" if announced else f"; [yellow]warning:[/] could not announce it on "
                         f"{settings.topic_model_updates}, workers keep the old one until "
                         "restarted"), highlight=False)
    elif promote:
        model = next(v.model for v in stopped.variants if v.name == stopped.winner)
        console.print(f"the winner serves {model}: the champion stays", highlight=False)
