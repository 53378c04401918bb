"""The trainer: periodic retraining behind a champion/challenger gate.

One round (``Trainer.run_round``), each step a method:
1. History (``history``): the ``interactions`` topic from its beginning to its end at the
   start of the read, validated with the event schema (what fails is already in the
   dead-letter topic), in event-time order. The topic is the one store every event
   reaches, so nothing else needs archiving; its retention bounds how far back the
   trainer learns.
2. Cut (``_prepare``, ``gate_cut``): the newest ``trainer_holdout_fraction`` of events,
   and none the champion learnt, is held out for the gate; the rest, in id maps seeded
   from the champion's, is what the challenger learns from.
3. Challenger (``_train``): retriever (SASRec) and ranker (NeuMF over the retriever's
   candidates), weights warm-started from the champion's (``model.weights``).
4. Gate (``_gate``, ``judge``, ``model.evaluation.gate``): both models ranked on the
   held-out cases, both protocols. A higher mean on one slice can be luck, so the
   challenger wins only over at least ``trainer_min_gate_cases`` cases from at least
   ``trainer_min_gate_users`` users and when the bootstrap interval of its per-case full
   NDCG@10 gain (users resampled) lies above zero; the verdict's reason gives the
   interval and the case count.
5. Refit (``_refit``), when the gate passes: the challenger never learnt the gate slice,
   the newest events, so it is fine-tuned on all of them (``refit_sequences``) before it
   is registered and promoted.
6. MLflow (``_log``): the promoted-to-be (or rejected) models' runs with both models' gate
   metrics, a comparison chart and the verdict (registered, alias untouched); the verdict,
   the case count and the interval also tag the model versions.
7. Promotion (``promote``), when the gate says so: under a Redis lock, compare-and-set the
   alias (the champion must still be the one the challenger beat, so two trainers cannot
   both promote), then announce on ``model-updates`` for the workers.
Registry, broker and Redis calls are retried with backoff. A round that fails, or trains
non-finite weights, promotes nothing and says why. ``streamrec train --champion`` runs the
same round (``Trainer.round_on``) on a file once a champion exists, with its own
``Recipe``.

Whoever started the trainer learns its state from its status file (``--status-file``,
``streams.status.TrainerStatus``): "ready" once it waits for triggers, "training" during a
round, and each round's ``RoundSummary``. The log says the same for operators.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.urls import mask_urls
from services.champion import move_alias, promotion_lock
from services.retrying import retry
from services.settings import Settings
from services.stack import mlflow_store
from services.trainer_trial import LOCK_HELD, LOCK_LOST, LiveTrial
from streams.catalog import ItemRecord
from streams.events import Event, InvalidEvent, parse, sent_no_later
from streams.messages import version_string
from streams.status import Outcome, RoundSummary, StatusFile, TrainerStatus

if TYPE_CHECKING:  # imported lazily at run time: TensorFlow takes seconds to import
    import keras

    from model.data import FeatureSpec, LeaveLastOut, Sequences
    from model.evaluation.gate import Cases, Verdict
    from model.evaluation.harness import Trained
    from model.evaluation.protocols import CaseRanks, Scorer
    from model.ranking.training import NeuMFConfig
    from model.retrieval.training import SASRecConfig
    from streams.registry import Champion

log = logging.getLogger("streamrec.trainer")


GateReport = dict[str, Any]  # ``evaluate_cases``: {"full": {...}, "sampled": {...}, "users": n}
# The run parameter holding the newest event time a model trained on (``gate_cut``).
TRAINED_UNTIL = "trained_until_ts"


def describe_round(summary: RoundSummary) -> str:
    """A round in one line, as ``trainer --once``, the demo and the benchmark print it."""
    return f"{summary.outcome}: {summary.reason}" + (
        f"; challenger {version_string(summary.versions)}" if summary.versions else "")


def round_due(settings: Settings, since_s: float, new_events: int) -> bool:
    """Whether the long-running trainer's next round is due: ``trainer_interval_min`` has
    passed since the last one or ``trainer_every_events`` events arrived (0 turns either
    trigger off)."""
    by_time = settings.trainer_interval_min > 0 and since_s >= settings.trainer_interval_min * 60
    by_events = settings.trainer_every_events > 0 and new_events >= settings.trainer_every_events
    return by_time or by_events


def gate_metrics(reports: Mapping[str, GateReport]) -> dict[str, float]:
    """Both models' gate figures as MLflow metrics, ``gate_<model>_<protocol>_<metric>``
    (``gate_champion_full_NDCG_at_10``): MLflow refuses '@' in a metric name."""
    return {f"gate_{who}_{protocol}_{metric}".replace("@", "_at_"): value
            for who, report in reports.items() for protocol in ("full", "sampled")
            for metric, value in report[protocol].items()}


def evidence_tags(verdict: Verdict, cases: int) -> dict[str, str]:
    """What the gate judged on, as tags a registry search can read: the number of cases
    and the bootstrap interval of the challenger's per-case gain, "none" where the gate
    computed none (no champion to compare with, or the means, the case count or the user
    count decided first)."""
    interval = verdict.interval
    return {"gate_cases": str(cases),
            "gate_interval": f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "none"}


def gate_tags(verdict: Verdict, champion: str | None, cases: int) -> dict[str, str]:
    """The challenger's run tags: the gate's verdict, why, which champion it faced
    (``champion``: its version string, None when there was none) and its evidence."""
    return {"gate_verdict": "promote" if verdict.promote else "reject",
            "gate_reason": verdict.reason, "champion_before": champion or "none",
            **evidence_tags(verdict, cases)}


def with_cases(verdict: Verdict, cases: int) -> Verdict:
    """``verdict`` with its number of gate cases in the reason, so the outcome line says
    how much evidence a comparison had. A verdict that compared nothing (no champion, a
    non-finite challenger) keeps its reason, as does one that counts the cases already."""
    if verdict.champion is None or f"{cases} gate cases" in verdict.reason:
        return verdict
    return replace(verdict, reason=f"{verdict.reason}; {cases} gate cases")


def round_outcome(verdict: Verdict, promotion: tuple[bool, str] | None) -> tuple[Outcome, str]:
    """The round's outcome and reason from the gate's verdict and what ``Trainer.promote``
    returned (None: not tried, the gate rejected). A refused promotion (lock held, champion
    moved) rejects for its own reason; one whose announcement failed still promoted, and
    says so after the verdict's reason."""
    if promotion is None:
        return "rejected", verdict.reason
    promoted, note = promotion
    if not promoted:
        return "rejected", note
    return "promoted", "; ".join(filter(None, [verdict.reason, note]))


def judge(cases: Cases, num_items: int, challenger: Scorer, champion: Scorer | None,
          settings: Settings, finite: bool, seed: int = 0,
          lists_seen: Mapping[str, bool] | None = None
          ) -> tuple[dict[str, GateReport], Verdict]:
    """Rank the gate's cases with both models alike (the same sampled negatives) and
    decide (``model.evaluation.gate.decide``) on the full-ranking ranks case by case,
    each case's user resampled as a unit, with the settings' gain, case and user counts.
    ``lists_seen`` names the models (``challenger``, ``champion``) whose live lists hold
    the user's own items: their full ranking keeps the history among the candidates
    (``keep_history``), so a repeated target counts where such a list could show it.
    Returns the reports keyed ``challenger`` and, when there is one, ``champion``
    (numbers only: they go to MLflow), and the verdict, its reason counting the cases."""
    from model.evaluation.gate import decide
    from model.evaluation.protocols import rank_cases

    seen = lists_seen or {}

    def rank(who: str, scorer: Scorer) -> CaseRanks:
        return rank_cases(scorer, cases.users, cases.histories, cases.targets, num_items,
                          side=cases.side, keep_history=seen.get(who, False))

    ranked = {"challenger": rank("challenger", challenger)}
    if champion is not None:
        ranked["champion"] = rank("champion", champion)
    reports = {who: ranks.report() for who, ranks in ranked.items()}
    paired = (ranked["challenger"].full, ranked["champion"].full) \
        if champion is not None else None
    verdict = decide(reports["challenger"], reports.get("champion"), paired,
                     min_cases=settings.trainer_min_gate_cases,
                     min_users=settings.trainer_min_gate_users, protocol="full",
                     min_gain=settings.trainer_min_gain, finite=finite,
                     case_users=cases.users, seed=seed)
    return reports, with_cases(verdict, reports["challenger"]["users"])


def gate_shortfall(cases: Cases, settings: Settings) -> str | None:
    """What the held-out slice lacks for the gate to compare two models (too few cases,
    or cases of too few users), or None when it has enough."""
    count, users = len(cases.users), len(set(cases.users.tolist()))
    if count < settings.trainer_min_gate_cases:
        return (f"{count:,} gate cases in the held-out slice, fewer than "
                f"trainer_min_gate_cases ({settings.trainer_min_gate_cases:,})")
    if users < settings.trainer_min_gate_users:
        return (f"the held-out slice's gate cases come from {users:,} users, fewer than "
                f"trainer_min_gate_users ({settings.trainer_min_gate_users:,})")
    return None


def served_forms(seen: Mapping[str, bool]) -> str:
    """How the gate judged each model's lists, for the reason of a comparison: empty when
    every list left the user's items out, as the plain protocol scores them."""
    if not any(seen.values()):
        return ""
    if len(seen) > 1 and all(seen.values()):
        return "judged as served: both models' lists hold the user's items"
    return "judged as served: " + ", ".join(
        f"{who}'s lists {'hold' if held else 'leave out'} the user's items"
        for who, held in seen.items())


@dataclass(frozen=True)
class Recipe:
    """How a round trains its challenger and names its MLflow runs: the trainer's rounds
    (``Trainer.recipe``: the settings' epochs, warm-started from the champion, runs named
    "trainer") or ``streamrec train --champion`` (its ``--epochs``, a fresh model, runs
    named after the file). ``params`` join the runs' parameters."""

    epochs: int | None                       # cap; None: early stopping
    warm_start: bool                         # from the champion's weights
    label: str
    params: Mapping[str, Any]
    pretrain: bool = False                   # the ranker's GMF and MLP alone first (not the refit)


@dataclass(frozen=True)
class _RoundData:
    """What a round learns from and is judged on, in the challenger's id space: the
    champion's id maps extended by what the history adds, so both share ids."""

    history: list[Event]                     # every event, in time order
    cut: int                                 # history[:cut] trains, history[cut:] judges
    records: list[ItemRecord]                # the catalogue (may be empty)
    champion_before: dict[str, str] | None   # the alias as read: promotion compares with it
    champion: Champion | None
    sequences: Sequences                     # of the training part
    cases: Cases                             # the gate's test cases from the held-out part

    @property
    def events(self) -> int:
        return len(self.history)

    @property
    def training_events(self) -> int:
        return self.cut

    @property
    def held_out(self) -> int:
        return len(self.history) - self.cut


@dataclass(frozen=True)
class _Challenger:
    """The trained challenger. ``trained`` is keyed by model kind (``model.evaluation.
    harness``): ``sasrec`` is the retriever, ``pipeline`` the ranker over its candidates.
    ``refit``: fine-tuned on every event after the gate (``Trainer._refit``)."""

    trained: dict[str, Trained]
    split: LeaveLastOut
    retriever_cfg: SASRecConfig
    ranker_cfg: NeuMFConfig
    finite: bool                             # every weight finite: a diverged run never wins
    refit: bool = False

    @property
    def roles(self) -> dict[str, keras.Model]:
        """Its models by role, as ``train_with_progress`` warm-starts from them."""
        retriever, ranker = self.trained["sasrec"].result, self.trained["pipeline"].result
        assert retriever is not None and ranker is not None
        return {"retriever": retriever.model, "ranker": ranker.model}


def _sequences(events: list[Event], users: list[str], items: list[str], spec: FeatureSpec,
               records: list[ItemRecord], char_tokens: int) -> Sequences:
    """Sequences of ``events`` whose id maps extend ``users`` and ``items`` (those keep
    their ids; new ones are appended, so a warm start copies rows one for one), with the
    catalogue's content where there is one (``char_tokens``: see ``catalogue_table``)."""
    from model.data import IdMap, build_sequences

    return build_sequences(events, users=IdMap.from_list(users), items=IdMap.from_list(items),
                           spec=spec, catalogue=records, char_tokens=char_tokens)


def warm_roles(champion: Champion) -> dict[str, keras.Model] | None:
    """The champion's models a round warm-starts from, by role, or None. The id maps a
    round extends are the retriever's; a ranker pinned beside an older retriever holds
    rows past them (its own later users and items), which the round's new ids would take
    by position, another user's or item's row each. Such a round trains both anew: a
    ranker alone from scratch would cross-fit its retrievers for the warm-started
    retriever's one or two epochs."""
    ranker = champion.ranker
    if ranker.num_users > len(champion.users) or ranker.num_items > len(champion.items):
        log.warning("round: the champion's ranker knows users or items its retriever does "
                    "not (a pair pinned by hand); the challenger trains from scratch")
        return None
    return {"retriever": champion.retriever, "ranker": ranker}


def keep_judged_form(refit: _Challenger, gated: _Challenger) -> None:
    """Give ``refit``'s ranker the gated ranker's serving choices: whether its lists hold
    the user's items (``NeuMF.recommends_seen``) and whose order they keep among unseen
    items (``NeuMF.retrieval_order``). Training chooses both anew on its validation, which
    for a refit is mostly the gate slice, and the gate judged the challenger in the form
    it chose before: a model promoted on one form must not serve another."""
    before, after = gated.trained["pipeline"].result, refit.trained["pipeline"].result
    assert before is not None and after is not None
    chose = (after.model.recommends_seen, after.model.retrieval_order)
    judged = (before.model.recommends_seen, before.model.retrieval_order)
    if chose != judged:
        log.info("refit: its validation chose (holds seen items, retriever's order) = %s; "
                 "kept %s, as the gate judged it", chose, judged)
    after.model.recommends_seen, after.model.retrieval_order = judged


def gate_cut(events: list[Event], fraction: float, seen_until: int | None) -> int:
    """Where the gate slice of ``events`` (in time order) begins: the newest ``fraction``,
    less any event the champion learnt (``seen_until``: the newest event time it trained
    on, None when its runs do not say). A refit champion learnt every event of its round,
    so without this the next round's slice would be mostly its own training data, won
    for it before the challenger is scored; with it, a round with too few new events has
    too few cases, and the champion stays until more arrive."""
    from model.data import time_split

    cut = len(time_split(events, 1 - fraction)[0])
    if seen_until is None:
        return cut
    return max(cut, bisect.bisect_right(events, seen_until, key=lambda e: e.ts))


def as_of(events: list[Event], now_ms: int) -> tuple[list[Event], int]:
    """``events`` without those stamped ahead of ``now_ms`` (the trainer's clock when it
    read them), and how many those were: a later round, read once the clock has passed
    them, learns them. (Read through ``sent_no_later``, an event is no later than its
    send time, so this leaves out only those whose send time is unknown or ahead.)
    Events up to a day ahead are valid (clock skew). Taken at its word, one sorted into
    the gate slice as the newest, and once a champion had learnt it, the next rounds took
    everything before it as already seen (``gate_cut``): no gate cases for up to a day. Brought back to the clock instead, one learnt by a refit
    champion came back in the next round's gate slice, stamped after what it learnt."""
    kept = [e for e in events if e.ts <= now_ms]
    return kept, len(events) - len(kept)


def first_copies(events: Iterable[Event]) -> tuple[list[Event], int]:
    """Each user's event once, its first copy in topic order, and how many repeats were
    left out. The topic is at-least-once (a client resends after a timeout with the same
    event id, a log replayed twice): the workers drop the repeats, and a trainer that
    kept them learnt transitions from an item to itself that no session held, and took
    each repeat in the gate slice as a case whose answer is the item before it."""
    # event id -> the user it first came from: strings the events hold already, where a
    # set of (user, id) tuples for every event cost gigabytes for 25M events. An id two
    # users share is kept once for each (the workers dedupe per user): only those pairs,
    # which no producer of unique ids makes, go in a set.
    first_user: dict[str, str] = {}
    shared: set[tuple[str, str]] = set()
    kept, repeats = [], 0
    for event in events:
        user = first_user.get(event.event_id)
        if user is None:
            first_user[event.event_id] = event.user_id
        elif user == event.user_id or (event.user_id, event.event_id) in shared:
            repeats += 1
            continue
        else:
            shared.add((event.user_id, event.event_id))
        kept.append(event)
    return kept, repeats


def refit_sequences(data: _RoundData, spec: FeatureSpec) -> Sequences:
    """Every event of the round, the gate slice included, in id maps that extend the
    challenger's and with its fitted features (``spec``, as its training split fitted
    them), so the refit starts from its weights row for row and users and items first
    seen in the gate slice get rows of their own."""
    seqs = data.sequences
    return _sequences(data.history, seqs.users.to_list(), seqs.items.to_list(), spec,
                      data.records, seqs.content.spec.char_tokens if seqs.content else 0)


class Trainer:
    """Rounds of retraining behind the gate (one with ``run_round``, on triggers with
    ``run_forever``), reported to ``status_file`` when given (``streams.status``)."""

    def __init__(self, settings: Settings, seed: int = 42,
                 status_file: Path | None = None) -> None:
        self.settings, self.seed = settings, seed
        self.store = mlflow_store(settings)
        self.store.ensure()
        self.status = StatusFile(status_file, TrainerStatus())
        self.trial = LiveTrial(settings, self.store, self.promote) \
            if settings.trainer_promotion == "experiment" else None

    def history(self) -> list[Event]:
        """The interactions topic's events as the workers' sessions hold them: valid and
        keyed by their user, each once (``first_copies``), none later than its send time
        (``sent_no_later``) nor than the time of the read (``as_of``), in event-time order
        (ties by id)."""
        from streams.consumer import read_to_end

        def read() -> list[Event]:
            events, rejected = [], 0
            for record in read_to_end(self.settings.kafka,
                                      self.settings.topic_interactions):
                try:
                    event = parse(record.value)
                except InvalidEvent:
                    rejected += 1
                    continue
                if record.key != event.key:  # none, or another's: the workers
                    rejected += 1  # dead-letter it (wrong_key), so no session holds it
                    continue
                events.append(sent_no_later(event, record.timestamp_ms))  # as workers read it
            if rejected:
                log.info("history: skipped %d records the workers dead-letter (invalid, or "
                         "keyed by other than their user)", rejected)
            return events

        read_at = int(time.time() * 1000)
        events, repeats = first_copies(retry("reading the history", read))
        if repeats:
            log.info("history: left out %d repeated events (an event id its user sent "
                     "before), as the workers do", repeats)
        events, ahead = as_of(events, read_at)
        if ahead:
            log.warning("history: %d events stamped ahead of this machine's clock are left "
                        "for a later round", ahead)
        events.sort(key=lambda e: (e.ts, e.event_id))
        return events

    def catalogue(self) -> list[ItemRecord]:
        """The newest valid record of each item on the items topic (none: no catalogue,
        and the models train on ids alone)."""
        from streams.catalog import parse_keyed_item
        from streams.consumer import read_to_end

        def read() -> list[ItemRecord]:
            records: dict[str, ItemRecord] = {}
            for record in read_to_end(self.settings.kafka, self.settings.topic_items):
                if record.value is None:
                    records.pop((record.key or b"").decode(errors="replace"), None)
                    continue
                with suppress(InvalidEvent):  # dead-lettered by its loader, or keyed as
                    item = parse_keyed_item(record.key, record.value)  # another item:
                    records[item.item_id] = item  # refused as the workers refuse it
            return list(records.values())

        return retry("reading the catalogue", read)

    def champion_versions(self) -> dict[str, str] | None:
        """{registered name: version} behind the champion alias for both roles, None
        before the first promotion."""
        from streams.registry import ROLE_NAMES, alias_versions

        return retry("reading the champion alias",
                     lambda: alias_versions(self.store, list(ROLE_NAMES)))

    def seen_until(self, versions: dict[str, str]) -> int | None:
        """The newest event time the models at ``versions`` trained on (their runs'
        ``trained_until_ts``, the earliest of them), None when no run says (models
        logged before the parameter existed)."""
        client = self.store.client()

        def read() -> int | None:
            found = [client.get_run(client.get_model_version(name, version).run_id)
                     .data.params.get(TRAINED_UNTIL) for name, version in versions.items()]
            return min((int(v) for v in found if v is not None), default=None)

        return retry("reading what the champion learnt", read)

    def run_round(self) -> RoundSummary:
        """One round; a failure is its outcome, never an exception, so a long-running
        trainer survives it. The status says "training" meanwhile, then counts the round,
        holds its summary and returns to the state before."""
        before = self.status.current.state
        self.status.update(state="training")
        try:
            result = self._round()
        except Exception as exc:  # noqa: BLE001 - a failed round must not stop the service
            log.exception("round failed, nothing promoted")
            # Masked: an MLflow error names the tracking URI, which may hold a password,
            # and the reason is printed, kept in the status file and shown by `demo`.
            # One line: TensorFlow's and MLflow's errors run over many (logged above).
            first = next(iter(str(exc).strip().splitlines()), "")
            result = RoundSummary("failed", mask_urls(f"{type(exc).__name__}: {first}"))
        log.info("round outcome=%s events=%d versions=%s reason=%s", result.outcome,
                 result.events, result.versions, result.reason)
        self.status.update(state=before, rounds=self.status.current.rounds + 1,
                           last_round=result)
        return result

    def recipe(self) -> Recipe:
        """The trainer's way to train a challenger: ``trainer_epochs``, warm-started from
        the champion, its runs named "trainer" and the topic as their data."""
        s = self.settings
        return Recipe(s.trainer_epochs, True, "trainer",
                      {"data": f"topic {s.topic_interactions}"})

    def _round(self) -> RoundSummary:
        """The topic's history, then ``round_on`` it; with too little history the round
        ends before training (skipped)."""
        s = self.settings
        if self.trial is not None and (settled := self.trial.settle()) is not None:
            return settled  # a live trial ran: concluded now, or still undecided
        events = self.history()
        if len(events) < s.trainer_min_events:
            return RoundSummary("skipped", f"{len(events):,} events in {s.topic_interactions}, "
                                f"fewer than trainer_min_events ({s.trainer_min_events:,})",
                                events=len(events))
        return self.round_on(events, self.catalogue(), self.recipe())

    def round_on(self, events: list[Event], records: list[ItemRecord], recipe: Recipe
                 ) -> RoundSummary:
        """A round's steps in order on ``events`` (in time order) and a catalogue: the
        trainer's on its topic, ``streamrec train --champion``'s on a file. With no case
        to judge by, it ends before training (skipped)."""
        from model.data import EVALUATED_MIN, leave_last_out
        from model.ranking.training import cross_fit_shortfall

        data = self._prepare(events, records)
        if not data.held_out:
            return RoundSummary("skipped", "no event newer than those the champion learnt "
                                "to judge it by", events=data.events)
        if not len(data.cases.users):  # known before training: do not train for nothing
            return RoundSummary("skipped", "no test cases in the held-out slice (no user "
                                "there has history before it)", events=data.events)
        few = None if data.champion is None else gate_shortfall(data.cases, self.settings)
        if few:
            return RoundSummary("skipped", f"{few} to compare a challenger with the champion",
                                events=data.events)  # the gate would refuse any model
        if not any(len(s) >= EVALUATED_MIN for s in data.sequences.by_user):
            return RoundSummary("skipped", "no user of the training slice has "
                                f"{EVALUATED_MIN} events or more to validate a model on",
                                events=data.events)
        if short := cross_fit_shortfall(leave_last_out(data.sequences).train):
            return RoundSummary("skipped", short, events=data.events)
        champion = data.champion
        log.info("round: %d events, %d for training, newest %d held out; champion %s",
                 data.events, data.training_events, data.held_out,
                 champion.version if champion else "none")
        challenger = self._train(data.sequences, recipe.epochs, warm_roles(champion)
                                 if champion is not None and recipe.warm_start else None,
                                 recipe.pretrain)
        reports, verdict = self._gate(data, challenger)
        if verdict.promote:
            challenger, verdict = self._refit(data, challenger, verdict)
        versions = self._log(data, challenger, reports, verdict, recipe)
        outcome, reason = self._settle(versions, verdict, data.champion_before,
                                       reports["challenger"]["users"])
        return RoundSummary(outcome, reason, versions, data.events)

    def _prepare(self, events: list[Event], records: list[ItemRecord]) -> _RoundData:
        """Load the champion, if any, and cut the history by time (``gate_cut``): the
        newest events are held out for the gate, the rest becomes training sequences whose
        id maps extend the champion's."""
        from model.evaluation.gate import gate_cases
        from streams.registry import load_champion

        s = self.settings
        before = self.champion_versions()
        # By the versions just read: the alias read again could name the next champion,
        # gated and warm-started from while the cut follows this one.
        champion = retry("loading the champion",
                         lambda: load_champion(self.store, version_string(before))) \
            if before else None
        cut = gate_cut(events, s.trainer_holdout_fraction,
                       self.seen_until(before) if before else None)
        past, recent = events[:cut], events[cut:]
        sequences = _sequences(past, champion.users.to_list() if champion else [],
                               champion.items.to_list() if champion else [], s.feature_spec(),
                               records, s.content_char_tokens)
        if sequences.content is not None:
            log.info("round: %d catalogue records, %d of %d items described", len(records),
                     sequences.content.covered, sequences.num_items)
        return _RoundData(events, len(past), records, before, champion, sequences,
                          gate_cases(sequences, recent))

    def _judged_mode(self, gated: _Challenger) -> Settings:
        """The settings with the gated retriever's content mode in place of ``auto``: the
        refit would choose the mode anew on its own validation (mostly the gate slice), and
        could serve ``sum`` where the gate judged ``map`` (``keep_judged_form`` holds the
        ranker's choices the same way)."""
        spec = gated.roles["retriever"].encoder.content_spec
        if spec is None:
            return self.settings
        return self.settings.model_copy(update={"retriever_content_mode": spec.mode})

    def _train(self, sequences: Sequences, epochs: int | None,
               init: dict[str, keras.Model] | None, pretrain: bool = False,
               settings: Settings | None = None) -> _Challenger:
        """Train a retriever (SASRec) and a ranker (NeuMF) on ``sequences``, each
        warm-started from ``init``'s model in its role when given: a round refines the
        champion rather than starting over, and a refit continues the challenger.
        ``pretrain``: the ranker's GMF and MLP trained alone before they are fused.
        ``settings``: these instead of the trainer's (the refit's judged content mode)."""
        from model.data import leave_last_out
        from model.weights import all_finite
        from services.training_run import train_with_progress

        split = leave_last_out(sequences)
        trained, retriever_cfg, ranker_cfg = train_with_progress(
            split, ["sasrec", "pipeline"], settings or self.settings, epochs, self.seed,
            pretrain, init)
        finite = all(t.result is not None and all_finite(t.result.model)
                     for t in trained.values())
        return _Challenger(trained, split, retriever_cfg, ranker_cfg, finite)

    def _gate(self, data: _RoundData, challenger: _Challenger
              ) -> tuple[dict[str, GateReport], Verdict]:
        """Judge the challenger's pipeline against the champion's (``judge``), the
        champion through ``KnownPrefix``, in the challenger's id space. Each is judged as
        its live lists would be served (``STREAMREC_RECS_EXCLUDE_SEEN``, under ``auto``
        its ranker's choice): the user's own items among its candidates or not."""
        from model.evaluation.gate import KnownPrefix
        from model.pipeline import PipelineScorer, excludes_seen

        items, champion, choice = data.sequences.num_items, None, self.settings.exclude_seen
        pipeline = challenger.trained["pipeline"].scorer
        assert isinstance(pipeline, PipelineScorer)
        seen = {"challenger": not excludes_seen(pipeline.ranker, choice)}
        if (c := data.champion) is not None:
            cfg = challenger.ranker_cfg
            seen["champion"] = not excludes_seen(c.ranker, choice)
            champion = KnownPrefix(PipelineScorer.of(c.retriever, c.ranker, cfg.candidates,
                                                     exclude_seen=not seen["champion"],
                                                     head_weights=cfg.head_weights),
                                   len(c.users), len(c.items), items)
        reports, verdict = judge(data.cases, items,
                                 pipeline.excluding_seen(not seen["challenger"]), champion,
                                 self.settings, challenger.finite, self.seed, seen)
        if verdict.champion is not None and (forms := served_forms(seen)):
            verdict = replace(verdict, reason=f"{verdict.reason}; {forms}")
        return reports, verdict

    def _refit(self, data: _RoundData, challenger: _Challenger, verdict: Verdict
               ) -> tuple[_Challenger, Verdict]:
        """The gated challenger fine-tuned on every event, the gate slice included, for
        ``trainer_refit_epochs`` (0: returned as gated): it never saw the newest events,
        which are the ones a champion must know, and users and items first seen there
        would have no rows of their own until the next round.

        A fine-tune from its weights, not training anew: a few epochs instead of the
        whole run, and the same model the gate judged, moved by the newest events.
        Early stopping still scores the starting point, so the refit's joint training
        never ends worse on validation (each user's second-newest event, mostly in the
        gate slice) than the gated weights with rows added; the ranker's conversion heads
        are then fitted for conversion, not next items (``refit_given``), and its
        validation is scored again after them. As everywhere, each user's newest two events
        stay out of training, for validation and the test metrics. A refit that diverges
        is not promoted."""
        epochs = self.settings.trainer_refit_epochs
        if not epochs:
            return challenger, verdict
        everything = refit_sequences(data, challenger.split.sequences.spec)
        refit = replace(self._train(everything, epochs, challenger.roles,
                                    settings=self._judged_mode(challenger)), refit=True)
        log.info("refit: %d epochs on all %d events (%d in the gate slice), %d users and "
                 "%d items (%d and %d new since the cut); best epochs %s", epochs,
                 data.events, data.held_out, everything.num_users, everything.num_items,
                 everything.num_users - data.sequences.num_users,
                 everything.num_items - data.sequences.num_items,
                 {name: t.result.best_epoch for name, t in refit.trained.items() if t.result})
        if not refit.finite:
            return challenger, replace(verdict, promote=False, reason=(
                f"{verdict.reason}; but its refit on all {data.events:,} events has "
                "non-finite weights"))
        keep_judged_form(refit, challenger)
        return refit, verdict

    def _log(self, data: _RoundData, challenger: _Challenger, reports: dict[str, GateReport],
             verdict: Verdict, recipe: Recipe) -> dict[str, str]:
        """Register the challenger in MLflow whatever the verdict, so a rejected one can be
        inspected: a run per model with its config, both models' gate metrics, the
        verdict's tags and the comparison chart; the alias stays where it is. Returns the
        registered {name: version}."""
        from streams.registry import comparison_figure, log_trained

        s, cases = self.settings, reports["challenger"]["users"]
        trained = challenger.split.sequences.interactions()  # the oldest events, in order
        logged = log_trained(
            self.store, s.mlflow_experiment, challenger.trained, challenger.split, recipe.label,
            {"sasrec": challenger.retriever_cfg.to_dict(),
             "neumf": challenger.ranker_cfg.to_dict()},
            {**recipe.params, "events": data.events, "gate_events": data.held_out,
             "gate_cases": cases, "trained_events": trained,
             TRAINED_UNTIL: data.history[trained - 1].ts,
             "refit_epochs": s.trainer_refit_epochs if challenger.refit else 0},
            metrics=gate_metrics(reports),
            tags=gate_tags(verdict, data.champion.version if data.champion else None, cases),
            figures={"champion_vs_challenger.png": comparison_figure(
                reports, f"gate: newest {data.held_out:,} events, {verdict.metric}")})
        return {name: version for run in logged.values()
                for name, version in run.versions.items()}

    def _settle(self, versions: dict[str, str], verdict: Verdict,
                expected: dict[str, str] | None, cases: int) -> tuple[Outcome, str]:
        """Promote the registered challenger when the gate says so (with
        ``trainer_promotion=experiment``, once a live trial says so), then tag its versions
        with the round's outcome, reason and evidence, so the registry tells why a version
        is, or is not, the champion."""
        from streams.registry import tag_versions

        if verdict.promote and expected is not None and self.trial is not None:
            trial = self.trial.start(versions, expected)  # users judge it before it is promoted
            outcome, reason = trial.outcome, trial.reason
        else:
            outcome, reason = round_outcome(
                verdict, self.promote(versions, expected) if verdict.promote else None)
        try:  # the outcome stands either way: a promoted model is served already
            retry("tagging the versions", lambda: tag_versions(
                self.store, versions, {"gate_verdict": outcome, "gate_reason": reason,
                                       **evidence_tags(verdict, cases)}))
        except Exception as exc:  # noqa: BLE001 - the tags only tell why
            log.error("the versions %s were not tagged with the round's outcome (%s): %s",
                      versions, outcome, exc)
        return outcome, reason

    def promote(self, versions: dict[str, str], expected: dict[str, str] | None
                ) -> tuple[bool, str]:
        """Move the alias to ``versions`` if it still points at ``expected``, then announce.
        Returns (promoted, a note: why not, or what went wrong after)."""
        from streams.hot_swap import announce
        from streams.registry import alias_versions

        s = self.settings
        with promotion_lock(s.redis) as held:
            if not held:
                return False, LOCK_HELD
            now = retry("reading the champion alias",
                        lambda: alias_versions(self.store, list(versions)))
            if now != expected:
                return False, (f"the champion moved to {version_string(now) if now else 'none'}"
                               " while this challenger trained against "
                               f"{version_string(expected) if expected else 'none'}")
            if not held.still():  # the registry was slow: another trainer may move it now
                return False, LOCK_LOST
            move_alias(self.store, versions, expected, held)

        def announce_or_raise() -> None:
            if not announce(s.kafka, s.topic_model_updates, versions, s.mlflow_uri):
                raise RuntimeError(f"no acknowledgement from {s.topic_model_updates}")

        try:
            retry("announcing the champion", announce_or_raise)
        except Exception as exc:  # noqa: BLE001 - promoted all the same: say so, not "failed"
            return True, f"announcing failed ({exc}): workers keep the old model until restarted"
        return True, ""

    def _no_champion(self) -> bool:
        """Whether the registry names no champion: one promoted elsewhere (``train
        --champion``) ends the wait for a first one. A registry away counts as none."""
        try:
            return self.champion_versions() is None
        except Exception:  # noqa: BLE001 - the next round says why it fails
            return True

    def run_forever(self, stop: threading.Event, poll_s: float = 10.0) -> None:
        """Rounds whenever ``round_due`` says so, until ``stop`` is set; with no champion
        yet, one at once, and while rounds are skipped (too few events), another as soon
        as the topic has grown to ``trainer_min_events``: a trainer started before the
        first events waited out a whole interval while workers served popularity. The
        status turns "ready" once the trainer waits for triggers."""
        from streams.consumer import TopicSizes

        s = self.settings
        with TopicSizes(s.kafka) as sizes:
            def topic_size() -> int:
                return retry("sizing the topic", lambda: sizes.size(s.topic_interactions))

            last_round, last_size = float("-inf"), -1  # -1: no champion, a round at once
            awaiting = True  # for a first champion
            try:
                if self.champion_versions() is not None:
                    last_round, last_size = time.monotonic(), topic_size()
                    awaiting = False
                log.info("trainer ready: %s events in %s so far; champion %s",
                         max(last_size, 0), s.topic_interactions,
                         "present" if last_size >= 0 else "none: a round now")
            except Exception as exc:  # noqa: BLE001 - Kafka or the registry away a while:
                log.error("trainer starting without the champion or the topic's size (%s): "
                          "a round now, which says why it fails while they are away", exc)
            while not stop.is_set():
                try:
                    size = topic_size()
                except Exception as exc:  # noqa: BLE001 - Kafka away a while: poll on
                    log.error("cannot size %s, polling again in %.0f s: %s",
                              s.topic_interactions, poll_s, exc)
                    stop.wait(poll_s)
                    continue
                first = awaiting and (last_size < 0 or last_size < size
                                      and size >= s.trainer_min_events)
                if first or round_due(s, time.monotonic() - last_round, size - last_size):
                    last_round, last_size = time.monotonic(), size
                    skipped = self.run_round().outcome == "skipped"
                    awaiting = awaiting and skipped and self._no_champion()
                if self.status.current.state != "ready":
                    self.status.update(state="ready")
                stop.wait(poll_s)
