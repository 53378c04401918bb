"""``streamrec train --champion`` once a champion exists: through the trainer's gate unless
``--force``; the first champion, and ``--force``, train as before. The round itself is
stubbed (``tests/unit/test_trainer_round.py`` runs a real one): these tests are about
which path the command takes and what it says."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.trainer import Recipe, Trainer
from streams.events import Event, parse
from streams.status import RoundSummary
from streams.synthetic import SyntheticConfig, generate

CHAMPION = {"streamrec-retriever": "1", "streamrec-ranker": "1"}
CHALLENGER = {"streamrec-retriever": "2", "streamrec-ranker": "2"}
WHY = ("full NDCG@10 0.2100 > champion 0.2000 (+0% needed); per-case gain 95% interval "
       "[-0.0100, +0.0300] not above zero; 250 gate cases")


class _Ungated(Exception):
    """Raised where the command trains without the gate."""


@pytest.fixture
def log(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A small log, a local state folder, and training without the gate stubbed out."""
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path / "state"))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(
        SyntheticConfig(users=20, items=15, events=300, seed=3))))

    def ungated(*_: object, **__: object) -> None:
        raise _Ungated

    clean_env.setattr("services.cli_models.train_with_progress", ungated)
    clean_env.setattr("infra.redis_server.probe_redis", lambda url, timeout_s: None)
    return path


def _registry(monkeypatch: pytest.MonkeyPatch, champion: dict[str, str] | None,
              summary: RoundSummary | None = None) -> list[tuple[int, Recipe]]:
    """The registry's champion as ``champion``; a gated round ends as ``summary``. Returns
    the rounds run: (events, recipe)."""
    rounds: list[tuple[int, Recipe]] = []

    def round_on(self: Trainer, events: list[Event], records: list, recipe: Recipe
                 ) -> RoundSummary:
        rounds.append((len(events), recipe))
        assert summary is not None, "gated without a champion"
        return summary

    monkeypatch.setattr(Trainer, "champion_versions", lambda self: champion)
    monkeypatch.setattr(Trainer, "round_on", round_on)
    return rounds


def _train(log: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["train", "--data", str(log), "--format", "jsonl",
                                    "--epochs", "3", *args])


def test_a_refused_challenger_exits_1_with_the_gates_reason_in_one_line(
    log: Path, clean_env: pytest.MonkeyPatch,
) -> None:
    rounds = _registry(clean_env, CHAMPION, RoundSummary("rejected", WHY, CHALLENGER, 300))
    result = _train(log, "--champion")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"rejected: {WHY}; challenger streamrec-retriever:v2+streamrec-ranker:v2; "
        "--force promotes without the gate")
    # The trainer's round on the file: a fresh model, capped as asked, runs named after it.
    assert rounds == [(300, Recipe(3, False, "events", {"data": str(log), "format": "jsonl"}))]


def test_a_challenger_that_passes_the_gate_is_promoted_by_the_round(
    log: Path, clean_env: pytest.MonkeyPatch,
) -> None:
    why = WHY.replace("[-0.0100", "[+0.0100").replace("not above", "above")
    _registry(clean_env, CHAMPION, RoundSummary("promoted", why, CHALLENGER, 300))
    result = _train(log, "--champion")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"promoted: {why}")


def test_a_headerless_csv_trains_with_its_columns_named_and_they_join_the_run(
    log: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Taobao's ``UserBehavior.csv`` has no header: ``--columns`` names its fields."""
    from streams.readers import read_events

    rows = [f"{e.user_id},{e.item_id},0,{e.event_type},{e.ts}\n" for e in read_events(log, "jsonl")]
    headerless = tmp_path / "UserBehavior.csv"
    headerless.write_text("".join(rows))
    rounds = _registry(clean_env, CHAMPION, RoundSummary("promoted", WHY, CHALLENGER, 300))
    result = CliRunner().invoke(app, ["train", "--data", str(headerless), "--format", "csv",
                                      "--champion", "--columns", "user,item,,type,time"])
    assert result.exit_code == 0, result.output
    [(events, recipe)] = rounds
    assert events == len(rows) == 300
    assert recipe.params == {"data": str(headerless), "format": "csv",
                             "columns": "user,item,,type,time"}
    refused = CliRunner().invoke(app, ["evaluate", "--data", str(headerless), "--format",
                                       "csv", "--columns", "user,thing,time"])
    assert refused.exit_code == 2 and "--columns" in refused.output
    assert "name no item" in refused.output


def test_the_gated_round_pretrains_as_asked_and_leaves_times_ahead_of_the_clock_out(
    log: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """A time ahead of the clock (valid up to a day), learnt by a champion, would leave
    the trainer's rounds no gate slice until it passed, or (brought back to the clock)
    come back in a later round's gate slice: it is left out, as the trainer's own history
    leaves it, and said so."""
    import time

    from streams.readers import read_events

    events = list(read_events(log, "jsonl"))
    ahead = int(time.time() * 1000) + 3_600_000
    log.write_bytes(b"".join(e.to_json() + b"\n" for e in events[:-1])
                    + replace(events[-1], ts=ahead).to_json() + b"\n")
    seen: list[tuple[int, bool]] = []

    def round_on(self: Trainer, events: list[Event], records: list, recipe: Recipe
                 ) -> RoundSummary:
        seen.append((max(e.ts for e in events), recipe.pretrain))
        return RoundSummary("promoted", WHY, CHALLENGER, len(events))

    clean_env.setattr(Trainer, "champion_versions", lambda self: CHAMPION)
    clean_env.setattr(Trainer, "round_on", round_on)
    before = int(time.time() * 1000)
    result = _train(log, "--champion", "--pretrain")
    assert result.exit_code == 0, result.output
    [(newest, pretrain)] = seen
    assert pretrain and newest == events[-2].ts < before
    assert "1 events stamped ahead of this machine's clock are left out" in result.output

    def first(split: object, *_: object, **__: object) -> None:  # the first champion's
        seen.append((max(int(t[-1]) for t in split.sequences.times if len(t)), True))
        raise _Ungated

    clean_env.setattr(Trainer, "champion_versions", lambda self: None)
    clean_env.setattr("services.cli_models.train_with_progress", first)
    assert isinstance(_train(log, "--champion").exception, _Ungated)
    assert seen[-1][0] == events[-2].ts


@pytest.mark.parametrize(("champion", "args"), [
    (None, ["--champion"]),                 # the first champion: nothing to compare with
    (CHAMPION, ["--champion", "--force"]),  # forced past the gate
    (CHAMPION, []),                         # not for the champion: no gate
])
def test_without_a_champion_or_with_force_it_trains_as_before(
    log: Path, clean_env: pytest.MonkeyPatch, champion: dict[str, str] | None,
    args: list[str],
) -> None:
    rounds = _registry(clean_env, champion)
    result = _train(log, *args)
    assert isinstance(result.exception, _Ungated), result.output
    assert rounds == []


@pytest.mark.parametrize(("champion", "args"), [
    (CHAMPION, []), (CHAMPION, ["--force"]), (None, []),
])
def test_the_champion_is_retriever_and_ranker_together(
    log: Path, clean_env: pytest.MonkeyPatch, champion: dict[str, str] | None,
    args: list[str],
) -> None:
    """One model alone as the champion would pair with the other's old id maps."""
    rounds = _registry(clean_env, champion)
    result = _train(log, "--champion", "--model", "sasrec", *args)
    assert result.exit_code == 2 and "needs --model all" in result.output
    assert rounds == []


@pytest.mark.parametrize(("args", "says"), [
    (["--champion", "--no-register"], "cannot go with --no-register"),
    (["--force"], "it goes with --champion"),
])
def test_flags_that_would_be_ignored_are_refused_before_training(
        log: Path, clean_env: pytest.MonkeyPatch, args: list[str], says: str) -> None:
    """Each trained, promoted nothing and exited 0, saying nothing of the flag."""
    rounds = _registry(clean_env, CHAMPION)
    result = _train(log, *args)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.replace("│", " ").split()), result.output
    assert rounds == []


def test_epochs_below_one_are_refused_in_one_line(log: Path, clean_env: pytest.MonkeyPatch
                                                  ) -> None:
    _registry(clean_env, None)
    for epochs in ("0", "-1"):
        result = CliRunner().invoke(app, ["train", "--data", str(log), "--format", "jsonl",
                                          "--epochs", epochs])
        assert result.exit_code == 2 and "--epochs" in result.output, result.output
    for flag, value in (("--epochs", "0"), ("--interval-min", "-1"), ("--refit-epochs", "-1")):
        result = CliRunner().invoke(app, ["trainer", "--once", flag, value])  # names the flag
        assert result.exit_code == 2 and flag in result.output, result.output


def test_a_trainer_with_no_trigger_is_refused_before_it_starts(
        clean_env: pytest.MonkeyPatch) -> None:
    """Both triggers at 0: one round where there is no champion, then none, while its
    status said "ready"."""
    result = CliRunner().invoke(app, ["trainer", "--interval-min", "0", "--every-events", "0"])
    assert result.exit_code == 2 and "or run --once" in result.output, result.output


def test_the_command_promotes_by_the_offline_gate_even_where_trials_are_configured(
    log: Path, clean_env: pytest.MonkeyPatch,
) -> None:
    """With ``trainer_promotion=experiment`` the command started a live trial that outlived
    it, then exited 1 as if refused."""
    clean_env.setenv("STREAMREC_TRAINER_PROMOTION", "experiment")
    trials: list[object] = []

    def round_on(self: Trainer, events: list[Event], records: list, recipe: Recipe
                 ) -> RoundSummary:
        trials.append(self.trial)
        return RoundSummary("promoted", WHY, CHALLENGER, 300)

    clean_env.setattr(Trainer, "champion_versions", lambda self: CHAMPION)
    clean_env.setattr(Trainer, "round_on", round_on)
    result = _train(log, "--champion")
    assert result.exit_code == 0, result.output
    assert trials == [None]  # no live trial: the gate alone decides


def test_the_first_champion_is_promoted_only_over_no_champion(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """It set the alias directly, decided before training: a champion the long-running
    trainer promoted meanwhile was overwritten without the gate. It now goes through the
    trainer's promotion (its lock and compare-and-set against no champion)."""
    import typer

    from services.cli_models import _first_champion
    from services.settings import load_settings

    asked: list[tuple[dict[str, str], object]] = []

    def promote(self: Trainer, versions: dict[str, str], expected: object) -> tuple[bool, str]:
        asked.append((versions, expected))
        return False, "the champion moved to streamrec-retriever:v1 while this trained"

    clean_env.setattr(Trainer, "promote", promote)
    with pytest.raises(typer.Exit) as exit_:
        _first_champion(load_settings(), CHALLENGER)
    assert exit_.value.exit_code == 1 and asked == [(CHALLENGER, None)]
    assert "registered, not promoted: the champion moved" in capsys.readouterr().err


def test_champion_without_redis_is_refused_before_training(
    log: Path, clean_env: pytest.MonkeyPatch,
) -> None:
    """The promotion takes the trainer's lock in Redis: found missing after minutes of
    training, the command ended in a traceback with the models registered, unpromoted."""
    rounds = _registry(clean_env, None)
    clean_env.setattr("infra.redis_server.probe_redis",
                      lambda url, timeout_s: "Connection refused")
    result = _train(log, "--champion")
    assert result.exit_code == 1 and "did not answer (Connection refused)" in str(
        result.exception), result.output
    assert rounds == []  # not trained: the stub would have raised _Ungated
    clean_env.setattr("infra.redis_server.probe_redis", lambda url, timeout_s: "down")
    assert isinstance(_train(log, "--champion", "--force").exception, _Ungated)


def test_train_without_mlflow_is_refused_before_training(
    log: Path, clean_env: pytest.MonkeyPatch,
) -> None:
    """The models are logged to MLflow: found down only after training, the command
    ended in MLflow's retries, then an error, the trained models lost."""
    _registry(clean_env, None)
    clean_env.setenv("STREAMREC_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nobody there
    result = _train(log)
    assert result.exit_code == 1 and "did not answer within 10 s" in str(
        result.exception), result.output  # not trained: the stub would have raised _Ungated


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_numpy_refuses_is_a_bad_parameter_before_any_work(
        log: Path, tmp_path: Path, seed: str) -> None:
    """It was a traceback after the log was read; ``generate`` had emptied its file."""
    for args in (["train", "--data", str(log), "--format", "jsonl"],
                 ["evaluate", "--data", str(log), "--format", "jsonl"],
                 ["generate", str(log)]):
        result = CliRunner().invoke(app, [*args, "--seed", seed])
        assert result.exit_code == 2 and "--seed" in result.output, result.output
    assert log.stat().st_size > 0


def test_cold_items_with_a_catalogue_of_other_ids_is_one_line(
        log: Path, tmp_path: Path) -> None:
    """No logged item has a record (ids of another scheme): a ``ValueError`` traceback."""
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text('{"item_id": "ml-1", "title": "Heat"}\n')
    result = CliRunner().invoke(app, [
        "evaluate", "--data", str(log), "--format", "jsonl", "--items", str(catalogue),
        "--items-format", "jsonl", "--protocol", "cold-items"])
    assert result.exit_code == 2, result.output
    assert "no item of the log has a catalogue record" in result.output


def test_cold_items_with_no_case_is_refused_before_training(log: Path, tmp_path: Path) -> None:
    """A split in which no user meets a cold item after another trained every model, then
    printed an empty report."""
    first = parse(log.read_bytes().splitlines()[0])
    only_first = tmp_path / "first.jsonl"  # the one catalogued item, met first and once
    only_first.write_bytes(b"\n".join(
        [replace(first, item_id="x").to_json()]
        + [line for line in log.read_bytes().splitlines()
           if parse(line).user_id != first.user_id]) + b"\n")
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text('{"item_id": "x", "title": "Heat"}\n')
    result = CliRunner().invoke(app, [
        "evaluate", "--data", str(only_first), "--format", "jsonl", "--items", str(catalogue),
        "--items-format", "jsonl", "--protocol", "cold-items"])
    assert result.exit_code == 2 and "no case to rank" in result.output, result.output


def test_next_click_with_nothing_to_predict_is_refused_before_training(
        log: Path, tmp_path: Path) -> None:
    """A test log of other ids trained every model, then reported Recall@20 0.0000."""
    other = tmp_path / "test.jsonl"
    other.write_bytes(b"".join(replace(parse(line), item_id=f"other-{n}").to_json()
                               + b"\n" for n, line in enumerate(log.read_bytes().splitlines())))
    result = CliRunner().invoke(app, ["evaluate", "--data", str(log), "--format", "jsonl",
                                      "--test", str(other)])
    assert result.exit_code == 2 and "nothing to predict" in result.output, result.output


def test_cold_items_print_their_own_table(clean_env: pytest.MonkeyPatch, tmp_path: Path
                                          ) -> None:
    """The cold block reached the JSON alone: the table showed the warm figures under the
    cold protocol's title."""
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path / "state"))
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(
        SyntheticConfig(users=40, items=15, events=600, seed=3))))
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text("".join(f'{{"item_id": "i{n}", "title": "thing {n}", '
                                 f'"categories": ["c{n % 3}"]}}\n' for n in range(15)))
    result = CliRunner().invoke(app, [
        "evaluate", "--data", str(log), "--format", "jsonl", "--models", "popularity",
        "--items", str(catalogue), "--items-format", "jsonl", "--protocol", "cold-items",
        "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    cold = result.output[result.output.index("train_s"):]  # after the warm table
    assert "category-popularity" in cold and "full HR@10" in cold and "cases" in cold
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["models"]["popularity"]["cold_items"]["scored"] == "last"  # no content


def test_evaluate_piped_says_each_evaluated_epoch(tmp_path: Path) -> None:
    """The progress bar is silent without a terminal; ``evaluate`` (and ``train``) then said
    nothing at all until the report, which on a large log is an hour of silence in CI."""
    import os
    import subprocess
    import sys

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(
        SyntheticConfig(users=20, items=15, events=300, seed=3))))
    env = {k: v for k, v in os.environ.items()  # no setting, nothing that makes a terminal
           if not k.startswith("STREAMREC_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "evaluate", "--data", str(path), "--format",
         "jsonl", "--models", "sasrec", "--epochs", "1"],
        env={**env, "STREAMREC_DATA_DIR": str(tmp_path / "state")}, capture_output=True,
        text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "streamrec.train train model=sasrec epoch=1 loss=" in done.stderr
    assert "epoch=0 valid_ndcg10=" in done.stderr and "nan" not in done.stderr  # no loss yet
    assert "full NDCG@10" in done.stdout
    assert "dropout" in done.stdout  # the one the log chose


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_logged_is_this_codes_wherever_the_command_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked of the working directory: ``unknown`` from a data folder, and another
    project's commit from inside its repository."""
    from services.settings import REPO_ROOT
    from streams.registry import git_commit

    ours = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    if ours.returncode != 0:
        pytest.skip("not a git checkout")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)  # another repository, with no commit yet
    assert git_commit().removesuffix("-dirty") == ours.stdout.strip()


def test_a_ranker_from_another_log_is_refused_by_its_id_maps_not_its_row_counts() -> None:
    """Paired by row counts alone, a ranker of another log with as many rows was served:
    every score finite, every one another user's or item's."""
    from streams.registry import check_pair_maps

    retriever = {"users": ["u1", "u2"], "items": ["a", "b", "c"]}
    check_pair_maps(retriever, retriever)
    check_pair_maps(retriever, {"users": ["u1", "u2", "u3"], "items": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="items differ from position 1"):
        check_pair_maps(retriever, {"users": ["u1", "u2"], "items": ["a", "c", "b"]})
    with pytest.raises(ValueError, match="users differ from position 0"):
        check_pair_maps(retriever, {"users": ["x1", "x2", "x3"], "items": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="users differ from position 1"):
        check_pair_maps(retriever, {"users": ["u1"], "items": ["a", "b", "c"]})


def test_a_forced_promotion_refused_by_the_lock_is_one_line(
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """While a trainer promotes, ``train --champion --force`` trained and registered the
    models, then printed a traceback whose advice was an experiment's."""
    import typer

    from services.cli_models import _forced
    from services.settings import Settings
    from streams.experiment_control import ExperimentConflict

    def held(*_: object) -> bool:
        raise ExperimentConflict("another promotion holds the lock")

    clean_env.setattr("services.champion.promote", held)
    with pytest.raises(typer.Exit) as stopped:
        _forced(Settings(), {"streamrec-retriever": "3", "streamrec-ranker": "4"})
    assert stopped.value.exit_code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "registered, not promoted: another promotion holds the lock" in said
    assert "conclude" not in said
