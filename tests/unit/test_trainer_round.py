"""The trainer's pure parts and its status reporting, without Kafka, Redis or MLflow: how a
round's gate judges and becomes MLflow metrics and tags, how the verdict and the promotion
make the outcome, when a round is due, and what the status file says before, during and
after; and one whole round against a local MLflow store, whose promoted models must know
the gate slice."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from model.data import build_sequences, leave_last_out, time_split
from model.evaluation.gate import Cases, Verdict, gate_cases
from services.champion import Held, promotion_lock
from services.settings import Settings
from services.trainer import (
    Recipe,
    Trainer,
    as_of,
    describe_round,
    evidence_tags,
    gate_cut,
    gate_metrics,
    gate_shortfall,
    gate_tags,
    judge,
    refit_sequences,
    round_due,
    round_outcome,
    with_cases,
)
from streams.events import Event
from streams.status import RoundSummary, TrainerStatus, read_status
from streams.synthetic import SyntheticConfig, generate

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


def test_gate_tags_say_the_verdict_why_which_champion_it_faced_and_the_evidence() -> None:
    sure = replace(PROMOTE, interval=(0.0123, 0.04567))
    assert gate_tags(sure, "streamrec-retriever:v1+streamrec-ranker:v1", 240) == {
        "gate_verdict": "promote", "gate_reason": PROMOTE.reason,
        "champion_before": "streamrec-retriever:v1+streamrec-ranker:v1",
        "gate_cases": "240", "gate_interval": "[+0.0123, +0.0457]"}
    assert gate_tags(REJECT, None, 12) == {"gate_verdict": "reject", "gate_reason": REJECT.reason,
                                           "champion_before": "none", "gate_cases": "12",
                                           "gate_interval": "none"}
    assert evidence_tags(sure, 240) == {"gate_cases": "240", "gate_interval": "[+0.0123, +0.0457]"}


def test_a_comparison_says_how_many_cases_it_stood_on() -> None:
    assert with_cases(PROMOTE, 240).reason == f"{PROMOTE.reason}; 240 gate cases"
    # Nothing was compared, or the reason counts them already: said once.
    first = Verdict(True, "no champion yet", "full NDCG@10", None, 0.3)
    assert with_cases(first, 240) == first
    few = replace(REJECT, reason="... on only 150 gate cases (200 needed to compare)")
    assert with_cases(few, 150) == few


def test_a_held_out_slice_needs_enough_cases_from_enough_users_to_compare() -> None:
    def cases(users: np.ndarray) -> Cases:
        return Cases(users, [np.array([1])] * len(users), np.ones(len(users), np.int64),
                     None)  # type: ignore[arg-type] - the count needs no side features

    settings = Settings(trainer_min_gate_cases=200, trainer_min_gate_users=20)
    assert gate_shortfall(cases(np.repeat(np.arange(1, 21), 10)), settings) is None
    assert gate_shortfall(cases(np.arange(1, 200)), settings) == \
        "199 gate cases in the held-out slice, fewer than trainer_min_gate_cases (200)"
    assert gate_shortfall(cases(np.repeat(np.arange(1, 20), 20)), settings) == \
        ("the held-out slice's gate cases come from 19 users, fewer than "
         "trainer_min_gate_users (20)")


class _Knows:
    """A scorer that ranks the target of every case in ``known`` first and scores the rest
    at random (the same draws for every ``_Knows`` of one seed): a case is known by its
    user and history length, which differ between one user's cases."""

    name = "knows"

    def __init__(self, known: dict[tuple[int, int], int], num_items: int, seed: int = 0
                 ) -> None:
        self.known, self.num_items = known, num_items
        self.rng = np.random.default_rng(seed)

    def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
              ) -> np.ndarray:
        out = self.rng.random((len(users), self.num_items + 1))
        for row, (user, history) in enumerate(zip(users, histories)):
            if (target := self.known.get((int(user), len(history)))) is not None:
                out[row, target] = 2.0
        return out


def _gate_slice() -> tuple[Cases, int, list[tuple[tuple[int, int], int]]]:
    """The gate cases of a synthetic log's newest 20%, the item count, and each case's
    key and target in case order."""
    past, recent = time_split(list(generate(SyntheticConfig(users=60, items=40, events=3000,
                                                            seed=1))), 0.8)
    seqs = build_sequences(past)
    cases = gate_cases(seqs, recent)
    keys = [((int(u), len(h)), int(t))
            for u, h, t in zip(cases.users, cases.histories, cases.targets)]
    return cases, seqs.num_items, keys


def _first(cases: Cases, n: int) -> Cases:
    return Cases(cases.users[:n], cases.histories[:n], cases.targets[:n], cases.side[:n])


def test_the_gate_promotes_a_sure_gain_and_says_its_interval_and_case_count(
    clean_env: pytest.MonkeyPatch,
) -> None:
    cases, items, keys = _gate_slice()
    n = len(keys)
    assert n >= 300
    better = _Knows(dict(keys[: n // 2]), items)     # knows half the targets
    worse = _Knows(dict(keys[: n // 8]), items)      # an eighth
    reports, verdict = judge(cases, items, better, worse, Settings(), finite=True)
    assert verdict.promote, verdict
    assert verdict.interval is not None and verdict.interval[0] > 0
    assert "interval" in verdict.reason and verdict.reason.endswith(f"; {n} gate cases")
    assert reports["challenger"]["users"] == reports["champion"]["users"] == n
    assert reports["challenger"]["full"]["HR@10"] >= 0.5
    orjson.dumps(reports)  # numbers only: the reports go to MLflow and JSON
    # The other way round, the champion stays.
    reports, verdict = judge(cases, items, worse, better, Settings(), finite=True)
    assert not verdict.promote and "does not beat" in verdict.reason


def test_the_gate_keeps_the_champion_on_a_gain_that_may_be_luck_or_too_few_cases(
    clean_env: pytest.MonkeyPatch,
) -> None:
    cases, items, keys = _gate_slice()
    n = len(keys)
    # One case in hundreds apart: a higher mean, but an interval reaching down to zero.
    _, verdict = judge(cases, items, _Knows(dict(keys[: n // 2 + 1]), items),
                       _Knows(dict(keys[: n // 2]), items), Settings(), finite=True)
    assert not verdict.promote and verdict.interval is not None
    assert verdict.interval[0] <= 0 and "not above zero" in verdict.reason
    # A sure gain over fewer cases than the settings' minimum (200 by default).
    _, verdict = judge(_first(cases, 150), items, _Knows(dict(keys[:75]), items),
                       _Knows({}, items), Settings(), finite=True)
    assert not verdict.promote and "on only 150 gate cases (200 needed" in verdict.reason
    _, verdict = judge(_first(cases, 150), items, _Knows(dict(keys[:75]), items),
                       _Knows({}, items), Settings(trainer_min_gate_cases=100,
                                                   trainer_min_gate_users=20), finite=True)
    assert verdict.promote and "150 gate cases" in verdict.reason
    # The same sure gain, from fewer users than the settings ask (22 users give these 150).
    users = len(set(_first(cases, 150).users.tolist()))
    _, verdict = judge(_first(cases, 150), items, _Knows(dict(keys[:75]), items),
                       _Knows({}, items), Settings(trainer_min_gate_cases=100,
                                                   trainer_min_gate_users=users + 1),
                       finite=True)
    assert not verdict.promote and f"cases of only {users} users ({users + 1} needed" in \
        verdict.reason
    # No champion: the first sound challenger wins, with nothing to compare.
    reports, verdict = judge(cases, items, _Knows({}, items), None, Settings(), finite=True)
    assert (verdict.promote, verdict.reason, verdict.interval) == (True, "no champion yet", None)
    assert set(reports) == {"challenger"}


@pytest.mark.keras
@pytest.mark.parametrize(("setting", "held"), [("auto", (True, False)), ("true", (False, False)),
                                               ("false", (True, True))])
def test_the_gate_judges_each_model_as_its_lists_are_served(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, setting: str, held: tuple[bool, bool],
) -> None:
    """``held``: whether the challenger's and the champion's lists hold the user's items
    under ``setting``; the challenger's ranker chose to hold them, the champion's not."""
    import keras

    from model.evaluation.gate import KnownPrefix
    from model.evaluation.harness import Trained
    from model.evaluation.protocols import rank_cases
    from model.pipeline import PipelineScorer
    from model.ranking.neumf import NeuMF, start_from_score
    from model.ranking.training import NeuMFConfig
    from model.retrieval.index import ItemIndex
    from model.retrieval.sasrec import SASRec
    from model.retrieval.training import SASRecConfig, SASRecScorer
    from services.trainer import _Challenger, _RoundData
    from streams.registry import Champion

    keras.utils.set_random_seed(1)
    past, recent = time_split(list(generate(SyntheticConfig(users=60, items=40, events=3000,
                                                            seed=1))), 0.8)
    seqs = build_sequences(past)
    cases = gate_cases(seqs, recent)
    sasrec = SASRec(seqs.num_items, max_len=16, dim=16, blocks=1, dropout=0.0)
    scorer = SASRecScorer(sasrec)
    scorer.embed(cases.histories[:1])  # builds the model

    def ranker(recommends_seen: bool) -> NeuMF:
        model = start_from_score(NeuMF(seqs.num_users, seqs.num_items, 8, (16, 8),
                                       session_dim=16, use_score=True))
        model.recommends_seen = recommends_seen
        return model

    index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
    pipeline = PipelineScorer(scorer, index, ranker(True), candidates=30, exclude_seen=False)
    champion = Champion(sasrec, ranker(False), seqs.users, seqs.items, {})
    data = _RoundData([], 0, [], None, champion, seqs, cases)
    challenger = _Challenger({"pipeline": Trained("pipeline", pipeline, 0.0)},
                             leave_last_out(seqs), SASRecConfig(), NeuMFConfig(candidates=30),
                             finite=True)
    reports, verdict = _trainer(tmp_path, recs_exclude_seen=setting)._gate(data, challenger)

    def served(model: PipelineScorer, holds: bool) -> dict:
        model = KnownPrefix(model.excluding_seen(not holds), seqs.num_users, seqs.num_items,
                            seqs.num_items)
        return rank_cases(model, cases.users, cases.histories, cases.targets, seqs.num_items,
                          side=cases.side, keep_history=holds).report()

    assert reports["challenger"] == served(pipeline, held[0])
    assert reports["champion"] == served(PipelineScorer.of(sasrec, champion.ranker, 30), held[1])
    # The forms differ on this log, so a gate judging one form for all would fail above.
    assert served(pipeline, True)["full"] != served(pipeline, False)["full"]
    _, alone = _trainer(tmp_path, recs_exclude_seen=setting)._gate(replace(data, champion=None),
                                                                   challenger)
    assert alone.reason == "no champion yet"  # nothing compared: no form to tell
    said = {(True, False): "judged as served: challenger's lists hold the user's items, "
                           "champion's lists leave out the user's items",
            (True, True): "judged as served: both models' lists hold the user's items"}
    assert verdict.reason.endswith(said[held]) if any(held) else \
        "judged as served" not in verdict.reason, verdict.reason


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


def test_the_history_holds_each_event_once_as_the_workers_serve_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A client resending after a timeout, or a log replayed twice, puts an event on the
    topic twice; the workers drop the repeat, the trainer learnt ``a, a, b, b``."""
    import streams.consumer as consumer

    def event(i: int, user: str = "u1") -> Event:
        return Event(f"00000000-0000-4000-8000-{i:012d}", user, f"i{i}", "click",
                     1_700_000_000_000 + i)

    sent = [event(1), event(2), event(1), event(3), event(2), event(1, "u2"),
            event(1, "u2")]  # an id two users share: each keeps its first copy
    records = [SimpleNamespace(value=e.to_json(), key=e.key, timestamp_ms=e.ts) for e in sent]
    # keyed by other than its user: the workers dead-letter it, so no session holds it
    records.append(SimpleNamespace(value=event(4).to_json(), key=b"session-7", timestamp_ms=0))
    records.append(SimpleNamespace(value=event(6).to_json(), key=None, timestamp_ms=0))
    # stamped an hour after it was sent (a device's clock): read as of its send time
    ahead = Event(f"00000000-0000-4000-8000-{5:012d}", "u3", "i5", "click",
                  1_700_000_000_000 + 3_600_000)
    records.append(SimpleNamespace(value=ahead.to_json(), key=b"u3",
                                   timestamp_ms=1_700_000_000_009))
    monkeypatch.setattr(consumer, "read_to_end", lambda kafka, topic: records)
    trainer = object.__new__(Trainer)  # the read alone: no store
    trainer.settings = Settings(data_dir=tmp_path)
    assert [(e.user_id, e.item_id, e.ts - 1_700_000_000_000) for e in trainer.history()] == [
        ("u1", "i1", 1), ("u2", "i1", 1), ("u1", "i2", 2), ("u1", "i3", 3), ("u3", "i5", 9)]


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
    clean_env.setattr(trainer, "catalogue", lambda: [])  # a unit test: no broker to read
    clean_env.setattr(trainer, "champion_versions", lambda: None)

    def train(_: object) -> None:
        raise AssertionError("trained for nothing")

    clean_env.setattr(trainer, "_train", train)
    result = trainer.run_round()
    assert result.outcome == "skipped" and "no test cases" in result.reason
    assert result.events == 20
    # Users with two events each: cases to judge by, but none to validate a model on.
    events = [Event(f"00000000-0000-4000-8000-{t:012d}", f"u{t // 2}", f"i{t % 3}", "click", t)
              for t in range(1, 41)]
    result = trainer.run_round()
    assert result.outcome == "skipped" and "3 events or more" in result.reason
    # One heavy user among one-visit users: the ranker's retriever for the half of users
    # without them had nothing to learn, and the round failed after training the first.
    events = [Event(f"00000000-0000-4000-8000-{t:012d}", "heavy" if t % 2 else f"u{t}",
                    f"i{t % 7}", "click", t) for t in range(1, 81)]
    result = trainer.run_round()
    assert result.outcome == "skipped" and "every other user" in result.reason, result


def test_a_failed_round_is_an_outcome_and_the_next_one_is_counted_too(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path)

    def broken() -> list[Event]:  # its second line on: the log's, not the status file's
        raise RuntimeError("disk on fire\n  Traceback of the framework\n  more of it")

    clean_env.setattr(trainer, "history", broken)
    assert trainer.run_round() == RoundSummary("failed", "RuntimeError: disk on fire")
    assert trainer.run_round().outcome == "failed"
    assert _status(tmp_path).rounds == 2

    def unreachable() -> list[Event]:  # as MLflow words it, URI and all
        raise RuntimeError("API request to http://admin:pw-8a1c@mlflow:5000/api/2.0 failed")

    clean_env.setattr(trainer, "history", unreachable)
    assert "pw-8a1c" not in trainer.run_round().reason
    assert "pw-8a1c" not in (tmp_path / "trainer.json").read_text()


def test_the_gate_slice_holds_no_event_the_champion_learnt() -> None:
    events = [Event(f"00000000-0000-4000-8000-{i:012d}", "u", "i", "click", ts)
              for i, ts in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 8, 8])]
    assert gate_cut(events, 0.2, None) == 8                  # the newest 20%
    assert gate_cut(events, 0.2, 5) == 8                     # the champion learnt older ones
    assert gate_cut(events, 0.2, 7) == 8
    assert gate_cut(events, 0.2, 8) == 10                    # all of it: nothing to judge by
    assert gate_cut(events, 0.5, 6) == 6


def test_an_event_stamped_ahead_of_the_clock_cannot_claim_the_gate_slice() -> None:
    """An event up to a day ahead is valid (clock skew). Taken at its word it sorted as
    the newest, and once a champion learnt it every event before that time counted as
    seen: the next round's gate slice was empty until the clock caught up (#16). Brought
    back to the clock instead, a refit champion learnt it, and the next round, read
    later, put it in the gate slice (a review): it is left for a round after its time."""
    def event(i: int, ts: int) -> Event:
        return Event(f"00000000-0000-4000-8000-{i:012d}", "u", "i", "click", ts)

    skewed = event(7, 20)
    history = [*(event(i, i + 1) for i in range(7)), skewed]
    taken, ahead = as_of(history, 9)
    assert ahead == 1 and [e.ts for e in taken] == [1, 2, 3, 4, 5, 6, 7]
    assert as_of(taken, 9) == (taken, 0)
    learnt = max(e.ts for e in taken)  # what a champion refit on the first round learnt
    # A round read at 15: three events arrived since; the skewed one is still ahead.
    later, ahead = as_of([*history, *(event(10 + i, 10 + i) for i in range(3))], 15)
    assert ahead == 1 and skewed not in later
    # Read at 25: it is past, and its time is after anything the champion learnt.
    last = sorted([*history, *(event(10 + i, 10 + i) for i in range(3))], key=lambda e: e.ts)
    kept, _ = as_of(last, 25)
    cut = gate_cut(kept, 0.2, learnt)
    assert skewed in kept[cut:] and all(e.ts > learnt for e in kept[cut:])
    assert gate_cut([*history, event(10, 10)], 0.2, 20) == 9  # taken at its word: none


def _log_with_a_new_item(fresh: str = "fresh-item") -> list[Event]:
    """A synthetic log in which ``fresh`` first appears in the newest 10% (the gate slice),
    in the middle of several users' sequences (so that training, not only validation,
    sees it)."""
    events = list(generate(SyntheticConfig(users=80, items=60, events=2500, seed=5)))
    cut = int(len(events) * 0.9)
    for i in range(cut + 2, len(events) - 30, 6):
        events[i] = Event(events[i].event_id, events[i].user_id, fresh, events[i].event_type,
                          events[i].ts)
    return events


def test_the_refit_learns_every_event_in_id_maps_that_extend_the_challengers(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path)
    clean_env.setattr(trainer, "champion_versions", lambda: None)
    events = _log_with_a_new_item()
    data = trainer._prepare(events, [])
    everything = refit_sequences(data, data.sequences.spec)
    known = data.sequences.items.to_list()
    assert "fresh-item" not in known and data.sequences.interactions() == data.cut
    assert everything.items.to_list()[:len(known)] == known  # rows keep their meaning
    assert everything.users.to_list()[:data.sequences.num_users] == \
        data.sequences.users.to_list()
    assert everything.interactions() == len(events)
    fresh = everything.items.get("fresh-item")
    assert any(fresh in h for h in leave_last_out(everything).train)


def test_a_round_pretrains_the_ranker_when_its_recipe_asks(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """``streamrec train --champion --pretrain`` goes through ``round_on`` with a recipe
    that asks for it; until 2026-12-06 the gated path dropped the flag."""
    trainer = _trainer(tmp_path, trainer_min_events=1)
    clean_env.setattr(trainer, "champion_versions", lambda: None)
    asked: list[bool] = []

    def train(*args: object, **kwargs: object) -> None:
        asked.append(bool(args[5]))
        raise RuntimeError("stop after the call")

    clean_env.setattr("services.training_run.train_with_progress", train)
    for pretrain in (True, False):
        with pytest.raises(RuntimeError, match="stop after the call"):
            trainer.round_on(_log_with_a_new_item(), [], Recipe(1, False, "f", {}, pretrain))
    assert asked == [True, False]


def test_the_refit_keeps_the_challengers_numeric_moments(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """The challenger's moments were fitted on its training part; refitting them on the
    whole round would move every input its weights were trained on."""
    trainer = _trainer(tmp_path)
    clean_env.setattr(trainer, "champion_versions", lambda: None)
    data = trainer._prepare(_log_with_a_new_item(), [])
    fitted = replace(data.sequences.spec, numeric=("price",), numeric_mean=(5.0,),
                                 numeric_std=(2.0,))
    assert refit_sequences(data, fitted).spec == fitted


def test_the_promoted_models_know_an_item_only_the_gate_slice_holds(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """A whole round, against a local MLflow store (the promotion's lock and announcement
    stubbed: they need Redis and Kafka): the challenger learns the older 90% and is judged
    on the newest 10%; what is registered and promoted is its refit on all of it. The next
    round on the same history has no event the champion has not learnt to judge by."""
    import matplotlib.pyplot as plt

    import model.ranking.training as ranking_training
    from model.pipeline import PipelineScorer
    from streams.registry import RETRIEVER_NAME, load_champion, set_champion

    trainer = _trainer(tmp_path, trainer_min_events=1, trainer_epochs=1,
                       trainer_refit_epochs=1)
    events = _log_with_a_new_item()

    def promote(versions: dict[str, str], expected: object) -> tuple[bool, str]:
        set_champion(trainer.store, versions)
        return True, ""

    clean_env.setattr(trainer, "history", lambda: events)
    clean_env.setattr(trainer, "catalogue", lambda: [])
    clean_env.setattr(trainer, "promote", promote)
    # The refit's validation chooses the other serving form each time it is asked.
    chosen: list[tuple[bool, bool]] = []
    choose_order = ranking_training.choose_order

    def contrary(served: PipelineScorer, split: object) -> dict:
        figures = choose_order(served, split)  # type: ignore[arg-type]
        served.ranker.retrieval_order = served.ranker.recommends_seen = not chosen
        chosen.append((served.ranker.recommends_seen, served.ranker.retrieval_order))
        return figures

    clean_env.setattr(ranking_training, "choose_order", contrary)
    clean_env.setattr(ranking_training, "choose_seen",
                      lambda served, split: {"with": 0.0, "without": 0.0})
    open_before = set(plt.get_fignums())
    result = trainer.run_round()
    assert (result.outcome, result.reason) == ("promoted", "no champion yet"), result
    assert set(plt.get_fignums()) <= open_before  # its curves and comparison are closed
    champion = load_champion(trainer.store)
    assert champion.versions == result.versions
    fresh = champion.items.get("fresh-item")
    assert fresh, "the promoted models never saw the gate slice"
    table = np.asarray(champion.retriever.item_embeddings())
    assert table.shape[0] == len(champion.items) + 1 > fresh
    client = trainer.store.client()
    run = client.get_run(client.get_model_version(RETRIEVER_NAME,
                                                  result.versions[RETRIEVER_NAME]).run_id)
    assert run.data.params["trained_events"] == str(len(events))
    assert run.data.params["trained_until_ts"] == str(events[-1].ts)
    assert run.data.params["refit_epochs"] == "1"
    assert run.data.tags["gate_cases"] == run.data.params["gate_cases"]
    # Promoted in the form the gate judged, not the one the refit's validation chose.
    assert chosen == [(True, True), (False, False)]
    assert (champion.ranker.recommends_seen, champion.ranker.retrieval_order) == (True, True)
    again = trainer.run_round()
    assert again.outcome == "skipped" and "newer than those the champion learnt" in \
        again.reason, again
    # A few new events: too few gate cases for any challenger to be compared with the
    # champion, known before training (two models were trained and registered for nothing)
    last = events[-1]
    events.extend(Event(f"00000000-0000-4000-8000-{n:012d}", e.user_id, e.item_id, "click",
                        last.ts + n) for n, e in enumerate(events[-40:], 1))

    def train(*_: object, **__: object) -> None:
        raise AssertionError("trained for nothing")

    clean_env.setattr(trainer, "_train", train)
    few = trainer.run_round()
    assert few.outcome == "skipped" and "fewer than trainer_min_gate_cases (200)" in \
        few.reason, few


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
        found = self.sizes[min(len(self.states), len(self.sizes)) - 1]
        if isinstance(found, Exception):
            raise found
        return found


def _run_forever(trainer: Trainer, monkeypatch: pytest.MonkeyPatch, sizes: list,
                 champion: dict[str, str] | None, skipped: int = 0
                 ) -> tuple[list[str], list[TrainerStatus]]:
    """Runs the trainer until its first round that is not among the ``skipped`` first
    ends; returns its state each time it sized the topic and its status during each
    round."""
    stop, topic, rounds = threading.Event(), _Sizes(trainer, sizes), []

    def round_() -> RoundSummary:
        rounds.append(trainer.status.current)
        if len(rounds) <= skipped:
            return RoundSummary("skipped", "too few events")
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


def test_without_a_champion_a_skipped_round_is_run_again_once_enough_events_came(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """A trainer started before the first events skipped its round, then waited out its
    hour while the workers served popularity."""
    trainer = _trainer(tmp_path, trainer_interval_min=60, trainer_every_events=0,
                       trainer_min_events=500)
    sized, rounds = _run_forever(trainer, clean_env, [0, 200, 499, 499, 500], champion=None,
                                 skipped=1)
    # at once at 0 (skipped), not again below 500 events, again at 500
    assert len(sized) == 5 and len(rounds) == 2


def test_with_a_champion_the_trainer_is_ready_first_and_rounds_on_new_events(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, trainer_interval_min=0, trainer_every_events=50)
    sized, rounds = _run_forever(trainer, clean_env, [100, 120, 149, 150], champion={"r": "1"})
    # Sized at start (100), then polled: 120 and 149 are fewer than 50 new events, 150 not.
    assert sized == ["starting", "starting", "ready", "ready"]
    assert [s.state for s in rounds] == ["training"]
    assert (_status(tmp_path).state, _status(tmp_path).rounds) == ("ready", 1)


def test_a_champion_promoted_elsewhere_ends_the_wait_for_a_first_one(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Started with no champion, the trainer rounds whenever the topic grows while its
    rounds are skipped. Once a person promoted one (``train --champion``), it went on: a
    round, reading the whole topic and loading both models, at each 10 s poll."""
    trainer = _trainer(tmp_path, trainer_interval_min=60, trainer_every_events=0,
                       trainer_min_events=500)
    stop, topic, rounds, champion = threading.Event(), _Sizes(trainer, [0]), [], [None]
    grows = iter(range(600, 2000, 100))

    def size(name: str) -> int:
        topic.states.append(trainer.status.current.state)
        if len(topic.states) == 6:
            stop.set()
        return 0 if len(topic.states) == 1 else next(grows)

    def round_() -> RoundSummary:
        rounds.append(1)
        champion[0] = {"r": "1"}  # promoted by hand while the round ran
        return RoundSummary("skipped", "too few gate cases")

    topic.size = size  # type: ignore[method-assign]
    clean_env.setattr("streams.consumer.TopicSizes", topic)
    clean_env.setattr(trainer, "champion_versions", lambda: champion[0])
    clean_env.setattr(trainer, "_round", round_)
    trainer.run_forever(stop, poll_s=0)
    assert len(topic.states) == 6 and rounds == [1]  # the first round only


def test_a_kafka_outage_while_polling_does_not_end_the_trainer(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Five failed attempts to size the topic (about a minute of outage) used to end the
    long-running trainer; it now polls on and rounds once the topic answers again."""
    clean_env.setattr("services.trainer.time.sleep", lambda s: None)  # retry's backoff
    trainer = _trainer(tmp_path, trainer_interval_min=0, trainer_every_events=50)
    away = RuntimeError("broker away")
    sized, rounds = _run_forever(trainer, clean_env, [100, *[away] * 6, 150],
                                 champion={"r": "1"})
    assert len(sized) == 8 and [s.state for s in rounds] == ["training"]


def test_a_kafka_outage_at_start_does_not_end_the_trainer(
    clean_env: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Sizing the topic at start, with a champion, was outside the loop's guard: Kafka
    away for the five attempts ended the trainer process."""
    clean_env.setattr("services.trainer.time.sleep", lambda s: None)  # retry's backoff
    trainer = _trainer(tmp_path, trainer_interval_min=0, trainer_every_events=50)
    away = RuntimeError("broker away")
    sized, rounds = _run_forever(trainer, clean_env, [*[away] * 5, 100],
                                 champion={"r": "1"})
    assert len(sized) == 6 and [s.state for s in rounds] == ["training"]


def test_a_round_loads_the_champion_whose_versions_it_read(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It read the alias, then loaded by the alias again: a promotion in between had the
    round warm-start from and gate against one champion while it cut by the other."""

    from model.data import IdMap

    trainer = _trainer(tmp_path)
    read = {"streamrec-retriever": "4", "streamrec-ranker": "4"}
    asked: list[str] = []

    def load(store: object, alias: str = "champion") -> object:
        asked.append(alias)
        return SimpleNamespace(users=IdMap.from_list([]), items=IdMap.from_list([]))

    clean_env.setattr("streams.registry.load_champion", load)
    clean_env.setattr(trainer, "champion_versions", lambda: read)
    clean_env.setattr(trainer, "seen_until", lambda versions: None)
    trainer._prepare(_log_with_a_new_item(), [])
    assert asked == ["streamrec-retriever:v4+streamrec-ranker:v4"]


def test_an_alias_move_that_fails_part_way_is_rolled_back_with_retries(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The rollback was one attempt: a registry hiccup there left the alias on the new
    retriever and the old ranker, and its error hid the move's."""
    from contextlib import nullcontext

    import streams.registry as registry

    clean_env.setattr("services.trainer.time.sleep", lambda s: None)  # retry's backoff
    trainer = _trainer(tmp_path)
    old, new = {"r": "1", "n": "1"}, {"r": "2", "n": "2"}
    calls: list[dict[str, str]] = []

    def set_champion(store: object, versions: dict[str, str]) -> None:
        calls.append(versions)
        if versions == new or len(calls) == 6:  # every move, and the first rollback
            raise RuntimeError(f"registry hiccup {len(calls)}")

    clean_env.setattr(registry, "set_champion", set_champion)
    clean_env.setattr(registry, "alias_versions", lambda store, names: old)


    held = Held(True, SimpleNamespace(owned=lambda: True))
    clean_env.setattr("services.trainer.promotion_lock", lambda url: nullcontext(held))
    with pytest.raises(RuntimeError, match="registry hiccup 5"):
        trainer.promote(new, old)
    assert calls == [new] * 5 + [old, old]


def test_a_move_that_fails_after_the_lock_expired_is_not_rolled_back(
        clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
        ) -> None:
    """The move's retries can outlast the lock (300 s against five calls to a slow
    registry): another trainer may then take it and promote, and the restore undid that
    promotion (a review). Past the lock, nothing is restored, and that is said."""
    from contextlib import nullcontext

    import streams.registry as registry

    clean_env.setattr("services.trainer.time.sleep", lambda s: None)  # retry's backoff
    trainer = _trainer(tmp_path)
    old, new = {"r": "1", "n": "1"}, {"r": "2", "n": "2"}
    calls: list[dict[str, str]] = []
    owned = iter([True])  # held when checked before the move, expired after it

    def set_champion(store: object, versions: dict[str, str]) -> None:
        calls.append(versions)
        raise RuntimeError("registry timed out")

    clean_env.setattr(registry, "set_champion", set_champion)
    clean_env.setattr(registry, "alias_versions", lambda store, names: old)
    held = Held(True, SimpleNamespace(owned=lambda: next(owned, False)))
    clean_env.setattr("services.trainer.promotion_lock", lambda url: nullcontext(held))
    with pytest.raises(RuntimeError, match="registry timed out"):
        trainer.promote(new, old)
    assert calls == [new] * 5  # no restore of ``old``
    assert "after the promotion lock expired: not restoring" in caplog.text


def test_a_lock_release_redis_fails_leaves_what_the_block_did_standing(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Only an expired lock was caught on release: Redis not answering there raised out
    of ``promote`` after the alias had moved, so the round said "failed" and the new
    champion was never announced."""
    import redis
    from redis.exceptions import ConnectionError as RedisDown

    class Lock:
        def acquire(self, blocking: bool, token: bytes) -> bool:
            return True

        def release(self) -> None:
            raise RedisDown("Connection reset by peer")

    class Client:
        def lock(self, key: str, timeout: float) -> Lock:
            return Lock()

        def close(self) -> None:
            pass

    monkeypatch.setattr(redis.Redis, "from_url", lambda url, **kwargs: Client())
    done = []
    with promotion_lock("redis://cache:6379/0") as held:
        done.append(bool(held))
    assert done == [True] and "not released (Connection reset by peer)" in caplog.text


@pytest.mark.parametrize(("gated", "refit"), [("sum", "sum"), ("map", "map"), (None, "auto")])
def test_the_refit_trains_the_retriever_in_the_content_mode_the_gate_judged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gated: str | None, refit: str) -> None:
    """Under ``auto`` the refit chose the mode anew on its own validation (mostly the gate
    slice): a retriever judged as ``map`` could be promoted as ``sum``."""
    import services.trainer as trainer_module
    from services.trainer import _Challenger

    trainer = _trainer(tmp_path, trainer_refit_epochs=1)
    spec = None if gated is None else SimpleNamespace(mode=gated)
    retriever = SimpleNamespace(encoder=SimpleNamespace(content_spec=spec))
    challenger = _Challenger(
        {"sasrec": SimpleNamespace(result=SimpleNamespace(model=retriever)),
         "pipeline": SimpleNamespace(result=SimpleNamespace(model=object()))},
        SimpleNamespace(sequences=SimpleNamespace(spec=None)),  # type: ignore[arg-type]
        None, None, True)  # type: ignore[arg-type]
    trained_with: list[Settings] = []

    def train(*_: object, settings: Settings, **__: object) -> None:
        trained_with.append(settings)
        raise InterruptedError

    monkeypatch.setattr(trainer_module, "refit_sequences", lambda data, spec: None)
    monkeypatch.setattr(trainer, "_train", train)
    with pytest.raises(InterruptedError):
        trainer._refit(None, challenger, None)  # type: ignore[arg-type]
    assert [s.retriever_content_mode for s in trained_with] == [refit]


def test_training_a_pipeline_on_too_few_users_for_its_cross_fitting_is_refused_first() -> None:
    """``streamrec train`` and ``evaluate`` on such a log trained the retriever, then ended
    in a traceback that said no user held two items."""
    from infra.errors import StackError
    from services.training_run import train_with_progress

    events = [Event(f"00000000-0000-4000-8000-{t:012d}", "heavy" if t % 2 else f"u{t}",
                    f"i{t % 7}", "click", t) for t in range(1, 81)]
    split = leave_last_out(build_sequences(events))
    with pytest.raises(StackError, match="every other user"):
        train_with_progress(split, ["sasrec", "pipeline"], Settings(), 1, 0)


def test_a_ranker_pinned_beside_an_older_retriever_is_not_warm_started_from() -> None:
    """Its rows past the retriever's maps are its own later users and items: the round's
    new ids, appended to the retriever's maps, took them by position (a review)."""
    from model.data import IdMap
    from services.trainer import warm_roles

    def champion(ranker_users: int, ranker_items: int) -> SimpleNamespace:
        return SimpleNamespace(retriever="retriever", users=IdMap.from_list(["u1", "u2"]),
                               items=IdMap.from_list(["a", "b", "c"]),
                               ranker=SimpleNamespace(num_users=ranker_users,
                                                      num_items=ranker_items))

    paired = champion(2, 3)
    assert warm_roles(paired) == {"retriever": "retriever", "ranker": paired.ranker}
    for pinned in (champion(2, 5), champion(3, 3)):  # both anew: folds need a full count
        assert warm_roles(pinned) is None
