"""The trainer's live trials: a gated challenger goes live, later rounds settle it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import streams.experiment_control as control
import streams.experiment_report as report_module
import streams.experiment_store as store_module
import streams.registry as registry
from services.settings import load_settings
from services.trainer_trial import LiveTrial
from streams.experiment_control import new_experiment

VERSIONS = {"streamrec-retriever": "7", "streamrec-ranker": "7"}
CHAMPION = {"streamrec-retriever": "6", "streamrec-ranker": "6"}
HOUR = 3600.0


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The registry, topic and Redis as the trial sees them, recorded."""
    w = SimpleNamespace(declared={}, aliases=[("champion", CHAMPION)], stopped=[],
                        promoted=[], winner=None, now=1_000_000.0)

    def start(kafka: Any, topic: str, store: Any, experiment: Any, redis: Any) -> dict:
        w.declared[experiment.name] = experiment
        return {}

    def stop(kafka: Any, topic: str, redis: Any, name: str, winner: str | None = None) -> Any:
        w.stopped.append((name, winner))
        w.declared[name] = w.declared[name].model_copy(update={"state": "stopped"})

    def status(client: Any, experiment: Any) -> Any:
        return SimpleNamespace(winner=w.winner, verdict="a verdict", variants=[],
                               tests={"interleaving": {"p_value": 0.01, "wins": [3, 30]}})

    @contextlib.contextmanager
    def turn(redis: Any, topic: str) -> Iterator[None]:
        w.turns.append("taken")
        yield
        w.turns.append("released")

    w.turns = []
    monkeypatch.setattr(control, "start", start)
    monkeypatch.setattr(control, "stop", stop)
    monkeypatch.setattr(control, "one_declaration_at_a_time", turn)
    for module in (store_module, control):
        monkeypatch.setattr(module, "declarations", lambda kafka, topic: dict(w.declared))
    monkeypatch.setattr(report_module, "status", status)
    monkeypatch.setattr(registry, "set_champion",
                        lambda store, versions, alias="champion": w.aliases.append(
                            (alias, versions)))
    monkeypatch.setattr(registry, "alias_versions", lambda store, names, alias="champion": (
        next((v for a, v in reversed(w.aliases) if a == alias), None)))
    w.tagged = []
    monkeypatch.setattr(registry, "tag_versions",
                        lambda store, versions, tags: w.tagged.append((versions, tags)))
    return w


def trial(world: SimpleNamespace) -> LiveTrial:
    def promote(versions: dict[str, str], expected: dict[str, str] | None) -> tuple[bool, str]:
        world.promoted.append((versions, expected))
        return True, ""

    settings = load_settings(trainer_promotion="experiment", trainer_trial_max_hours=24)
    return LiveTrial(settings, None, promote, clock=lambda: world.now)


def test_a_gated_challenger_goes_live_against_the_champion(world: SimpleNamespace) -> None:
    summary = trial(world).start(VERSIONS, CHAMPION)
    (name, experiment), = world.declared.items()
    assert summary.outcome == "trial" and name in summary.reason
    assert [(v.name, v.model) for v in experiment.variants] == [
        ("champion", "champion"),
        ("challenger", "streamrec-retriever:v7+streamrec-ranker:v7")]
    assert experiment.mode == "interleave"
    assert world.aliases[1:] == [("trial-control", CHAMPION), ("challenger", VERSIONS)]
    assert world.promoted == []  # users judge it first


def test_no_trial_moves_the_aliases_while_another_experiment_runs(
        world: SimpleNamespace) -> None:
    """The trial's start refused it only after moving the ``challenger`` alias, which a
    person's experiment may name as a variant: its treatment silently changed model."""
    theirs = new_experiment("theirs", [("a", "champion", 0.5), ("b", "challenger", 0.5)])
    world.declared["theirs"] = theirs
    before = list(world.aliases)
    summary = trial(world).start(VERSIONS, CHAMPION)
    assert summary.outcome == "rejected" and "'theirs' is running" in summary.reason
    assert world.aliases == before and list(world.declared) == ["theirs"]


def test_no_trial_starts_against_a_champion_moved_while_the_challenger_trained(
        world: SimpleNamespace) -> None:
    """It went live against whatever the alias named by then, ran up to a day on half
    the users, and its win was then refused by the promotion's compare-and-set."""
    world.aliases.append(("champion", {"streamrec-retriever": "8", "streamrec-ranker": "8"}))
    summary = trial(world).start(VERSIONS, CHAMPION)
    assert summary.outcome == "rejected" and "moved to streamrec-retriever:v8" in summary.reason
    assert world.declared == {}


def test_no_experiment_means_a_round_as_usual_and_a_persons_means_none(
        world: SimpleNamespace) -> None:
    """While a person's experiment runs, a challenger the gate passes cannot go live: the
    round trained, gated and refit it, then threw it away, each round for days."""
    assert trial(world).settle() is None
    other = new_experiment("someone-elses", [("a", "champion", 0.5), ("b", "popularity", 0.5)])
    world.declared["someone-elses"] = other
    summary = trial(world).settle()  # only the trainer's own trials are its to settle
    assert summary.outcome == "skipped" and "'someone-elses' is running" in summary.reason
    world.declared.clear()
    for variants in ([("control", "champion", 0.5), ("b", "streamrec-ranker:v5", 0.5)],
                     [("b", "streamrec-ranker:v5", 0.5), ("control", "champion", 0.5)],
                     [("champion", "champion", 0.5), ("challenger", "challenger", 0.5)]):
        world.declared["trial-checkout"] = new_experiment("trial-checkout", variants)
        world.winner = "b"  # a person's experiment named like a trial: not the trainer's
        assert trial(world).settle().outcome == "skipped"
    assert world.stopped == [] and world.promoted == [] and world.tagged == []


@pytest.mark.parametrize(("winner", "hours", "outcome", "promoted", "stopped_with"), [
    ("challenger", 1, "promoted", True, "challenger"),
    ("champion", 1, "rejected", False, "champion"),
    (None, 25, "rejected", False, None),   # out of time: the champion stays
    (None, 1, "trial", False, "running"),  # still undecided: no new challenger meanwhile
])
def test_later_rounds_settle_the_trial(world: SimpleNamespace, winner: str | None,
                                       hours: float, outcome: str, promoted: bool,
                                       stopped_with: str | None) -> None:
    live = trial(world)
    live.start(VERSIONS, CHAMPION)
    (name,) = world.declared
    world.winner, world.now = winner, world.now + hours * HOUR
    summary = live.settle()
    assert summary.outcome == outcome, summary.reason
    assert world.promoted == ([(VERSIONS, CHAMPION)] if promoted else [])
    if stopped_with == "running":
        assert world.stopped == [] and "running for 1.0 h" in summary.reason
        assert world.tagged == []
    else:
        assert world.stopped == [(name, stopped_with)]
        # the outcome on the challenger's versions, whose gate tags say "trial" for good
        assert world.tagged == [(VERSIONS, {"trial_outcome": outcome,
                                            "trial_reason": summary.reason})]


@pytest.mark.parametrize("by_person", ["stopped", "withdrawn"])
def test_a_trial_a_person_stops_while_the_trainer_settles_it_is_left_as_they_left_it(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, by_person: str) -> None:
    """The trainer read the trial, then its test; a person's stop (or conclusion) landed in
    between, and the trainer promoted the challenger and wrote its own stop over theirs."""
    live = trial(world)
    live.start(VERSIONS, CHAMPION)
    (name,) = world.declared
    world.winner = "challenger"
    read = report_module.status

    def status(client: Any, experiment: Any) -> Any:
        if by_person == "stopped":
            world.declared[name] = world.declared[name].model_copy(
                update={"state": "stopped", "winner": "champion"})
        else:
            del world.declared[name]
        return read(client, experiment)

    monkeypatch.setattr(report_module, "status", status)
    world.turns.clear()
    summary = live.settle()
    assert summary.outcome == "rejected" and "stopped by someone else" in summary.reason
    assert world.promoted == [] and world.stopped == []
    assert world.turns == ["taken", "released"]


def test_a_trial_starts_in_one_turn_of_the_declaration_lock(world: SimpleNamespace,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The aliases moved before the lock was taken: a person's experiment started
    meanwhile could find its ``challenger`` variant serving the trainer's challenger."""
    moved = registry.set_champion

    def set_champion(store: Any, versions: dict[str, str], alias: str = "champion") -> None:
        assert world.turns == ["taken"], "an alias moved outside the declaration lock"
        moved(store, versions, alias)

    monkeypatch.setattr(registry, "set_champion", set_champion)
    assert trial(world).start(VERSIONS, CHAMPION).outcome == "trial"
    assert world.turns == ["taken", "released"] and len(world.declared) == 1


def test_a_won_trial_is_promoted_only_over_the_champion_it_started_against(
        world: SimpleNamespace) -> None:
    live = trial(world)
    live.start(VERSIONS, CHAMPION)
    world.aliases.append(("champion", {"streamrec-retriever": "8", "streamrec-ranker": "8"}))
    world.winner = "challenger"  # won against v6, while someone forced v8 in
    live.settle()
    assert world.promoted == [(VERSIONS, CHAMPION)]  # the trainer's check compares with v6
    world.declared.clear()
    world.aliases[:] = [("champion", CHAMPION)]  # a trial whose control was never recorded
    live.start(VERSIONS, CHAMPION)
    world.aliases.remove(("trial-control", CHAMPION))
    world.promoted.clear()
    live.settle()
    assert world.promoted == [(VERSIONS, None)]  # None never equals a champion: refused


def test_a_won_trial_promoted_by_a_round_that_failed_to_stop_it_is_reported_promoted(
        world: SimpleNamespace) -> None:
    """The alias moved, then stopping the trial failed: the next round's compare-and-set
    found the challenger itself as champion, and the model serving was "rejected"."""
    live = trial(world)
    live.start(VERSIONS, CHAMPION)
    world.winner = "challenger"
    world.aliases.append(("champion", VERSIONS))  # what the failed round had done
    summary = live.settle()
    assert summary.outcome == "promoted" and "promoted by an earlier round" in summary.reason
    assert world.promoted == [] and world.stopped == [(next(iter(world.declared)),
                                                       "challenger")]


def test_a_won_trial_stays_open_while_another_trainer_holds_the_promotion_lock(
        world: SimpleNamespace) -> None:
    from services.trainer_trial import LOCK_HELD

    held = [True]

    def promote(versions: dict[str, str], expected: dict[str, str] | None
                ) -> tuple[bool, str]:
        return (False, LOCK_HELD) if held[0] else (True, "")

    settings = load_settings(trainer_promotion="experiment", trainer_trial_max_hours=24)
    live = LiveTrial(settings, None, promote, clock=lambda: world.now)
    live.start(VERSIONS, CHAMPION)
    world.winner = "challenger"
    summary = live.settle()
    assert summary.outcome == "trial" and "trying again" in summary.reason
    assert world.stopped == []  # the win is not thrown away
    held[0] = False
    assert live.settle().outcome == "promoted" and world.stopped[0][1] == "challenger"


def test_with_promotion_by_experiment_a_passed_gate_starts_a_trial_not_a_promotion(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.evaluation.gate import Verdict
    from services.trainer import Trainer

    trainer = object.__new__(Trainer)  # the round's last step alone: no store, no topic
    trainer.settings, trainer.store, trainer.trial = load_settings(), None, trial(world)
    trainer.promote = lambda versions, expected: pytest.fail("promoted without a trial")
    tagged: list[dict] = []
    monkeypatch.setattr(registry, "tag_versions", lambda store, versions, tags: tagged.append(tags))
    passed = Verdict(True, "full NDCG@10 0.05 > champion 0.04", "NDCG@10", 0.04, 0.05, (0.001, 0.02))
    outcome, reason = trainer._settle(VERSIONS, passed, CHAMPION, 300)
    assert outcome == "trial" and "live trial trial-" in reason and len(world.declared) == 1
    assert tagged[0]["gate_verdict"] == "trial" and tagged[0]["gate_cases"] == "300"
    first = object.__new__(Trainer)  # no champion yet: nothing to run a trial against
    first.settings, first.store, first.trial = trainer.settings, None, trial(world)
    first.promote = lambda versions, expected: (True, "")
    assert first._settle(VERSIONS, passed, None, 300)[0] == "promoted"


def test_a_promoted_round_stays_promoted_when_its_versions_cannot_be_tagged(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The alias moved and the workers were told: a registry that then refuses the tags
    must not turn the round into "failed, nothing promoted"."""
    from model.evaluation.gate import Verdict
    from services.trainer import Trainer

    def refuse(store: object, versions: object, tags: object) -> None:
        raise OSError("registry away")

    monkeypatch.setattr(registry, "tag_versions", refuse)
    monkeypatch.setattr("services.trainer.time.sleep", lambda s: None)  # retry's backoff
    trainer = object.__new__(Trainer)
    trainer.settings, trainer.store, trainer.trial = load_settings(), None, None
    trainer.promote = lambda versions, expected: (True, "")
    passed = Verdict(True, "full NDCG@10 0.05 > champion 0.04", "NDCG@10", 0.04, 0.05, (0.001, 0.02))
    assert trainer._settle(VERSIONS, passed, CHAMPION, 300)[0] == "promoted"


def test_a_registry_hiccup_while_a_trial_starts_is_retried_not_a_failed_round(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate-passed challenger of a whole round of training was lost to one timeout of
    the registry between the trial's two alias moves, leaving an alias half moved."""
    monkeypatch.setattr("services.retrying.time.sleep", lambda s: None)
    moved = registry.set_champion
    failures = [OSError("registry: 503")]

    def flaky(store: Any, versions: dict[str, str], alias: str = "champion") -> None:
        if alias == "challenger" and failures:
            raise failures.pop()
        moved(store, versions, alias)

    monkeypatch.setattr(registry, "set_champion", flaky)
    assert trial(world).start(VERSIONS, CHAMPION).outcome == "trial"
    assert world.aliases[1:] == [("trial-control", CHAMPION), ("challenger", VERSIONS)]


def test_no_alias_moves_once_the_declaration_lock_has_expired(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry slow past the lock's TTL during the trial's reads: a person's experiment
    naming ``challenger`` may have started meanwhile, and the alias moved under it."""
    def expired() -> None:
        raise control.ExperimentConflict("the experiment declaration lock expired")

    monkeypatch.setattr(control, "still_in_turn", expired)
    before = list(world.aliases)
    summary = trial(world).start(VERSIONS, CHAMPION)
    assert summary.outcome == "rejected" and "lock expired" in summary.reason
    assert world.aliases == before and world.declared == {}
