"""The trainer's pure parts and its status reporting, without Kafka, Redis or MLflow: how a
round's gate becomes MLflow metrics and tags, how the verdict and the promotion make the
outcome, when a round is due, and what the status file says before, during and after."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from model.evaluation.gate import Verdict
from services.settings import Settings
from services.trainer import (
    Trainer,
    describe_round,
    gate_metrics,
    gate_tags,
    round_due,
    round_outcome,
)
from streams.events import Event
from streams.status import RoundSummary, TrainerStatus, read_status

REPORT = {"full": {"HR@10": 0.5, "NDCG@10": 0.25, "MRR": 0.2},
          "sampled": {"HR@10": 0.75, "NDCG@10": 0.5}, "users": 40}
PROMOTE = Verdict(True, "full NDCG@10 0.3000 > champion 0.2500 (+0% needed)", "full NDCG@10",
                  0.25, 0.3)
REJECT = Verdict(False, "full NDCG@10 0.2000 does not beat champion 0.2500 by more than 0%",
                 "full NDCG@10", 0.25, 0.2)


def test_gate_metrics_name_each_model_protocol_and_metric_without_at_signs() -> None:
    metrics = gate_metrics({"challenger": REPORT, "champion": {**REPORT, "full": {"MRR": 0.1}}})
    assert metrics == {
        "gate_challenger_full_HR_at_10": 0.5, "gate_challenger_full_NDCG_at_10": 0.25,
        "gate_challenger_full_MRR": 0.2, "gate_challenger_sampled_HR_at_10": 0.75,
        "gate_challenger_sampled_NDCG_at_10": 0.5, "gate_champion_full_MRR": 0.1,
        "gate_champion_sampled_HR_at_10": 0.75, "gate_champion_sampled_NDCG_at_10": 0.5}


def test_gate_tags_say_the_verdict_why_and_which_champion_it_faced() -> None:
    assert gate_tags(PROMOTE, "streamrec-retriever:v1+streamrec-ranker:v1") == {
        "gate_verdict": "promote", "gate_reason": PROMOTE.reason,
        "champion_before": "streamrec-retriever:v1+streamrec-ranker:v1"}
    assert gate_tags(REJECT, None) == {"gate_verdict": "reject", "gate_reason": REJECT.reason,
                                       "champion_before": "none"}


def test_the_outcome_follows_the_gate_then_the_promotion() -> None:
    assert round_outcome(REJECT, None) == ("rejected", REJECT.reason)
    assert round_outcome(PROMOTE, (True, "")) == ("promoted", PROMOTE.reason)
    # The promotion refused: its own reason, the gate's no longer matters.
    lock = "another trainer is promoting (promotion lock held)"
    assert round_outcome(PROMOTE, (False, lock)) == ("rejected", lock)
    # Promoted, but the announcement failed: both said.
    assert round_outcome(PROMOTE, (True, "announcing failed (x)")) == \
        ("promoted", f"{PROMOTE.reason}; announcing failed (x)")


def test_describe_round_names_the_challenger_versions_when_there_are_some() -> None:
    promoted = RoundSummary("promoted", "no champion yet",
                            {"streamrec-retriever": "2", "streamrec-ranker": "2"}, 900)
    assert describe_round(promoted) == ("promoted: no champion yet; challenger "
                                        "streamrec-retriever:v2+streamrec-ranker:v2")
    assert describe_round(RoundSummary("skipped", "too few events")) == \
        "skipped: too few events"


@pytest.mark.parametrize(("interval_min", "every", "since_s", "new", "due"), [
    (60, 0, 3599, 10**6, False),   # events trigger off: only time counts
    (60, 0, 3600, 0, True),
    (0, 500, 10**9, 499, False),   # time trigger off: only events count
    (0, 500, 0, 500, True),
    (1, 500, 30, 10, False),
    (0, 0, 10**9, 10**9, False),   # both off: never
])
def test_a_round_is_due_by_time_or_by_new_events(
    clean_env: pytest.MonkeyPatch, interval_min: float, every: int, since_s: float, new: int,
    due: bool,
) -> None:
    settings = Settings(trainer_interval_min=interval_min, trainer_every_events=every)
    assert round_due(settings, since_s, new) is due


def _trainer(tmp_path: Path, **settings: object) -> Trainer:
    return Trainer(Settings(data_dir=tmp_path / "state", **settings),  # type: ignore[arg-type]
                   status_file=tmp_path / "trainer.json")


def _status(tmp_path: Path) -> TrainerStatus:
    status = read_status(tmp_path / "trainer.json", TrainerStatus)
    assert status is not None
    return status


def test_a_round_with_too_little_history_is_skipped_and_reported(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, trainer_min_events=1000)
    assert _status(tmp_path) == TrainerStatus(state="starting")
    during: list[TrainerStatus] = []

    def history() -> list[Event]:
        during.append(_status(tmp_path))
        return []

    clean_env.setattr(trainer, "history", history)
    result = trainer.run_round()
    assert result == RoundSummary("skipped", "0 events in interactions, fewer than "
                                  "trainer_min_events (1,000)")
    assert [s.state for s in during] == ["training"]
    after = _status(tmp_path)
    assert (after.state, after.rounds, after.last_round) == ("starting", 1, result)


def test_no_training_without_a_case_to_judge_the_challenger_by(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, trainer_min_events=1)
    # Every user clicks once: no user in the held-out slice has history before it.
    events = [Event(f"00000000-0000-4000-8000-{t:012d}", f"u{t}", f"i{t % 3}", "click", t)
              for t in range(1, 21)]
    clean_env.setattr(trainer, "history", lambda: events)
    clean_env.setattr(trainer, "champion_versions", lambda: None)

    def train(_: object) -> None:
        raise AssertionError("trained for nothing")

    clean_env.setattr(trainer, "_train", train)
    result = trainer.run_round()
    assert result.outcome == "skipped" and "no test cases" in result.reason
    assert result.events == 20


def test_a_failed_round_is_an_outcome_and_the_next_one_is_counted_too(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path)

    def broken() -> list[Event]:
        raise RuntimeError("disk on fire")

    clean_env.setattr(trainer, "history", broken)
    assert trainer.run_round() == RoundSummary("failed", "RuntimeError: disk on fire")
    assert trainer.run_round().outcome == "failed"
    assert _status(tmp_path).rounds == 2


class _Sizes:
    """Stands in for ``streams.consumer.TopicSizes``: the topic grows as listed; notes the
    trainer's state each time it is asked."""

    def __init__(self, trainer: Trainer, sizes: list[int]) -> None:
        self.trainer, self.sizes, self.states = trainer, sizes, []

    def __call__(self, kafka: object) -> _Sizes:
        return self

    def __enter__(self) -> _Sizes:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def size(self, topic: str) -> int:
        self.states.append(self.trainer.status.current.state)
        return self.sizes[min(len(self.states), len(self.sizes)) - 1]


def _run_forever(trainer: Trainer, monkeypatch: pytest.MonkeyPatch, sizes: list[int],
                 champion: dict[str, str] | None) -> tuple[list[str], list[TrainerStatus]]:
    """Runs the trainer until its first round ends; returns its state each time it sized
    the topic and its status during each round."""
    stop, topic, rounds = threading.Event(), _Sizes(trainer, sizes), []

    def round_() -> RoundSummary:
        rounds.append(trainer.status.current)
        stop.set()
        return RoundSummary("promoted", "no champion yet", {"r": "1"}, sizes[-1])

    monkeypatch.setattr("streams.consumer.TopicSizes", topic)
    monkeypatch.setattr(trainer, "champion_versions", lambda: champion)
    monkeypatch.setattr(trainer, "_round", round_)
    trainer.run_forever(stop, poll_s=0)
    return topic.states, rounds


def test_without_a_champion_the_first_round_runs_at_once_then_the_trainer_is_ready(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, trainer_interval_min=0, trainer_every_events=0)
    sized, rounds = _run_forever(trainer, clean_env, [700], champion=None)
    assert sized == ["starting"] and [(s.state, s.rounds) for s in rounds] == [("training", 0)]
    after = _status(tmp_path)
    assert (after.state, after.rounds) == ("ready", 1)
    assert after.last_round == RoundSummary("promoted", "no champion yet", {"r": "1"}, 700)


def test_with_a_champion_the_trainer_is_ready_first_and_rounds_on_new_events(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, trainer_interval_min=0, trainer_every_events=50)
    sized, rounds = _run_forever(trainer, clean_env, [100, 120, 149, 150], champion={"r": "1"})
    # Sized at start (100), then polled: 120 and 149 are fewer than 50 new events, 150 not.
    assert sized == ["starting", "starting", "ready", "ready"]
    assert [s.state for s in rounds] == ["training"]
    assert (_status(tmp_path).state, _status(tmp_path).rounds) == ("ready", 1)
