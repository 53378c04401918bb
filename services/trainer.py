"""The trainer: periodic retraining behind a champion/challenger gate.

One round (``Trainer.run_round``), each step a method:
1. History (``history``): the ``interactions`` topic from its beginning to its end at the
   start of the read, validated with the event schema (what fails is already in the
   dead-letter topic), in event-time order. The topic is the one store every event
   reaches, so nothing else needs archiving; its retention bounds how far back the
   trainer learns.
2. Cut (``_prepare``): the newest ``trainer_holdout_fraction`` of events is held out for
   the gate; the rest, in id maps seeded from the champion's, is what the challenger
   learns from.
3. Challenger (``_train``): retriever (SASRec) and ranker (NeuMF over the retriever's
   candidates), weights warm-started from the champion's (``model.weights``).
4. Gate (``_gate``, ``model.evaluation.gate``): both models scored on the held-out slice,
   both protocols.
5. MLflow (``_log``): the challenger's runs with both models' gate metrics, a comparison
   chart and the verdict (registered, alias untouched); the verdict also tags the model
   versions.
6. Promotion (``promote``), when the gate says so: under a Redis lock, compare-and-set the
   alias (the champion must still be the one the challenger beat, so two trainers cannot
   both promote), then announce on ``model-updates`` for the workers.
Registry, broker and Redis calls are retried with backoff. A round that fails, or trains
non-finite weights, promotes nothing and says why.

Whoever started the trainer learns its state from its status file (``--status-file``,
``streams.status.TrainerStatus``): "ready" once it waits for triggers, "training" during a
round, and each round's ``RoundSummary``. The log says the same for operators.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from services.settings import Settings
from services.stack import mlflow_store
from streams.catalog import ItemRecord
from streams.events import Event, InvalidEvent, parse
from streams.messages import version_string
from streams.status import Outcome, RoundSummary, StatusFile, TrainerStatus

if TYPE_CHECKING:  # imported lazily at run time: TensorFlow takes seconds to import
    from model.data import LeaveLastOut, Sequences
    from model.evaluation.gate import Cases, Verdict
    from model.evaluation.harness import Trained
    from model.evaluation.protocols import Scorer
    from model.ranking.training import NeuMFConfig
    from model.retrieval.training import SASRecConfig
    from streams.registry import Champion

log = logging.getLogger("streamrec.trainer")
LOCK_KEY = "streamrec:trainer:promote"
T = TypeVar("T")


def retry(what: str, call: Callable[[], T], attempts: int = 5, delay_s: float = 1.0) -> T:
    """``call()``, retried with exponential backoff; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any hiccup is worth another try
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d of %d), retrying in %.0f s: %s", what, attempt,
                        attempts, delay_s, exc)
            time.sleep(delay_s)
            delay_s *= 2
    raise AssertionError("unreachable")


@contextmanager
def promotion_lock(redis_url: str, ttl_s: int = 300) -> Iterator[bool]:
    """Yields True while this process holds the promotion lock, False if another does.
    The lock expires after ``ttl_s`` should its holder die."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    token = uuid.uuid4().hex
    held = bool(retry("taking the promotion lock",
                      lambda: client.set(LOCK_KEY, token, nx=True, ex=ttl_s)))
    try:
        yield held
    finally:
        if held:  # release only our own lock (compare-and-delete)
            client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then "
                        "return redis.call('del', KEYS[1]) end return 0", 1, LOCK_KEY, token)


GateReport = dict[str, Any]  # ``evaluate_cases``: {"full": {...}, "sampled": {...}, "users": n}


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


def gate_tags(verdict: Verdict, champion: str | None) -> dict[str, str]:
    """The challenger's run tags: the gate's verdict, why, and which champion it faced
    (``champion``: its version string, None when there was none)."""
    return {"gate_verdict": "promote" if verdict.promote else "reject",
            "gate_reason": verdict.reason, "champion_before": champion or "none"}


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


@dataclass(frozen=True)
class _RoundData:
    """What a round learns from and is judged on, in the challenger's id space: the
    champion's id maps extended by what the history adds, so both share ids."""

    events: int                              # in the history
    training_events: int                     # the older part, to train on
    held_out: int                            # the newest part, for the gate
    champion_before: dict[str, str] | None   # the alias as read: promotion compares with it
    champion: Champion | None
    sequences: Sequences                     # of the training part
    cases: Cases                             # the gate's test cases from the held-out part


@dataclass(frozen=True)
class _Challenger:
    """The trained challenger. ``trained`` is keyed by model kind (``model.evaluation.
    harness``): ``sasrec`` is the retriever, ``pipeline`` the ranker over its candidates."""

    trained: dict[str, Trained]
    split: LeaveLastOut
    retriever_cfg: SASRecConfig
    ranker_cfg: NeuMFConfig
    finite: bool                             # every weight finite: a diverged run never wins


class Trainer:
    """Rounds of retraining behind the gate (one with ``run_round``, on triggers with
    ``run_forever``), reported to ``status_file`` when given (``streams.status``)."""

    def __init__(self, settings: Settings, seed: int = 42,
                 status_file: Path | None = None) -> None:
        self.settings, self.seed = settings, seed
        self.store = mlflow_store(settings)
        self.store.ensure()
        self.status = StatusFile(status_file, TrainerStatus())

    def history(self) -> list[Event]:
        """Valid events of the interactions topic, in event-time order (ties by id)."""
        from streams.consumer import read_to_end

        def read() -> list[Event]:
            events, rejected = [], 0
            for record in read_to_end(self.settings.kafka,
                                      self.settings.topic_interactions):
                try:
                    events.append(parse(record.value))
                except InvalidEvent:
                    rejected += 1
            if rejected:
                log.info("history: skipped %d invalid records (in the dead-letter topic)",
                         rejected)
            return events

        events = retry("reading the history", read)
        events.sort(key=lambda e: (e.ts, e.event_id))
        return events

    def catalogue(self) -> list[ItemRecord]:
        """The newest valid record of each item on the items topic (none: no catalogue,
        and the models train on ids alone)."""
        from streams.catalog import parse_item
        from streams.consumer import read_to_end

        def read() -> list[ItemRecord]:
            records: dict[str, ItemRecord] = {}
            for record in read_to_end(self.settings.kafka, self.settings.topic_items):
                if record.value is None:
                    records.pop((record.key or b"").decode(errors="replace"), None)
                    continue
                with suppress(InvalidEvent):  # the loader dead-lettered it already
                    item = parse_item(record.value)
                    records[item.item_id] = item
            return list(records.values())

        return retry("reading the catalogue", read)

    def champion_versions(self) -> dict[str, str] | None:
        """{registered name: version} behind the champion alias for both roles, None
        before the first promotion."""
        from streams.registry import ROLE_NAMES, alias_versions

        return retry("reading the champion alias",
                     lambda: alias_versions(self.store, list(ROLE_NAMES)))

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
            result = RoundSummary("failed", f"{type(exc).__name__}: {exc}")
        log.info("round outcome=%s events=%d versions=%s reason=%s", result.outcome,
                 result.events, result.versions, result.reason)
        self.status.update(state=before, rounds=self.status.current.rounds + 1,
                           last_round=result)
        return result

    def _round(self) -> RoundSummary:
        """The round's steps in order; with too little history, or no case to judge by,
        it ends before training (skipped)."""
        s = self.settings
        events = self.history()
        if len(events) < s.trainer_min_events:
            return RoundSummary("skipped", f"{len(events):,} events in {s.topic_interactions}, "
                                f"fewer than trainer_min_events ({s.trainer_min_events:,})",
                                events=len(events))
        data = self._prepare(events)
        if not len(data.cases.users):  # known before training: do not train for nothing
            return RoundSummary("skipped", "no test cases in the held-out slice (no user "
                                "there has history before it)", events=data.events)
        log.info("round: %d events, %d for training, newest %d held out; champion %s",
                 data.events, data.training_events, data.held_out,
                 data.champion.version if data.champion else "none")
        challenger = self._train(data)
        reports, verdict = self._gate(data, challenger)
        versions = self._log(data, challenger, reports, verdict)
        outcome, reason = self._settle(versions, verdict, data.champion_before)
        return RoundSummary(outcome, reason, versions, data.events)

    def _prepare(self, events: list[Event]) -> _RoundData:
        """Load the champion, if any, and cut the history by time: the newest
        ``trainer_holdout_fraction`` is held out for the gate, the rest becomes training
        sequences whose id maps extend the champion's."""
        from model.content import catalogue_table
        from model.data import IdMap, build_sequences, time_split
        from model.evaluation.gate import gate_cases
        from streams.registry import load_champion

        s = self.settings
        before = self.champion_versions()
        champion = retry("loading the champion", lambda: load_champion(self.store)) \
            if before else None
        past, recent = time_split(events, 1 - s.trainer_holdout_fraction)
        sequences = build_sequences(
            past, users=IdMap.from_list(champion.users.to_list()) if champion else None,
            items=IdMap.from_list(champion.items.to_list()) if champion else None,
            spec=s.feature_spec())
        if records := self.catalogue():
            sequences.content = catalogue_table(records, sequences.items.ids)
            log.info("round: %d catalogue records, %d of %d items described", len(records),
                     sequences.content.covered, sequences.num_items)
        return _RoundData(len(events), len(past), len(recent), before, champion, sequences,
                          gate_cases(sequences, recent))

    def _train(self, data: _RoundData) -> _Challenger:
        """Train the challenger's retriever (SASRec) and ranker (NeuMF) on the training
        sequences, each warm-started from the champion's model in its role: a round
        refines the champion rather than starting over."""
        from model.data import leave_last_out
        from model.weights import all_finite
        from services.training_run import train_with_progress

        champion = data.champion
        split = leave_last_out(data.sequences)
        trained, retriever_cfg, ranker_cfg = train_with_progress(
            split, ["sasrec", "pipeline"], self.settings, self.settings.trainer_epochs, self.seed,
            init={"retriever": champion.retriever, "ranker": champion.ranker}
            if champion else None)
        finite = all(t.result is not None and all_finite(t.result.model)
                     for t in trained.values())
        return _Challenger(trained, split, retriever_cfg, ranker_cfg, finite)

    def _gate(self, data: _RoundData, challenger: _Challenger
              ) -> tuple[dict[str, GateReport], Verdict]:
        """Score the challenger's pipeline and the champion's alike on the held-out cases
        (the champion through ``KnownPrefix``, in the challenger's id space), then decide.
        Returns the reports keyed ``challenger`` and, when there is one, ``champion``."""
        from model.evaluation.gate import KnownPrefix, decide
        from model.evaluation.protocols import evaluate_cases
        from model.pipeline import PipelineScorer

        cases, items = data.cases, data.sequences.num_items

        def score(scorer: Scorer) -> GateReport:
            return evaluate_cases(scorer, cases.users, cases.histories, cases.targets, items,
                                  side=cases.side)

        reports = {"challenger": score(challenger.trained["pipeline"].scorer)}
        if (champion := data.champion) is not None:
            reports["champion"] = score(KnownPrefix(
                PipelineScorer.of(champion.retriever, champion.ranker,
                                  challenger.ranker_cfg.candidates, exclude_seen=False,
                                  head_weights=challenger.ranker_cfg.head_weights),
                len(champion.users), len(champion.items), items))
        verdict = decide(reports["challenger"], reports.get("champion"),
                         min_gain=self.settings.trainer_min_gain, finite=challenger.finite,
                         min_cases=self.settings.trainer_min_gate_cases)
        return reports, verdict

    def _log(self, data: _RoundData, challenger: _Challenger,
             reports: dict[str, GateReport], verdict: Verdict) -> dict[str, str]:
        """Register the challenger in MLflow whatever the verdict, so a rejected one can be
        inspected: a run per model with its config, both models' gate metrics, the
        verdict's tags and the comparison chart; the alias stays where it is. Returns the
        registered {name: version}."""
        from streams.registry import comparison_figure, log_trained

        s = self.settings
        logged = log_trained(
            self.store, s.mlflow_experiment, challenger.trained, challenger.split, "trainer",
            {"sasrec": challenger.retriever_cfg.to_dict(),
             "neumf": challenger.ranker_cfg.to_dict()},
            {"data": f"topic {s.topic_interactions}", "events": data.events,
             "gate_events": data.held_out, "gate_cases": reports["challenger"]["users"]},
            metrics=gate_metrics(reports),
            tags=gate_tags(verdict, data.champion.version if data.champion else None),
            figures={"champion_vs_challenger.png": comparison_figure(
                reports, f"gate: newest {data.held_out:,} events, {verdict.metric}")})
        return {name: version for run in logged.values()
                for name, version in run.versions.items()}

    def _settle(self, versions: dict[str, str], verdict: Verdict,
                expected: dict[str, str] | None) -> tuple[Outcome, str]:
        """Promote the registered challenger when the gate says so, then tag its versions
        with the round's outcome and reason, so the registry tells why a version is, or
        is not, the champion."""
        from streams.registry import tag_versions

        outcome, reason = round_outcome(
            verdict, self.promote(versions, expected) if verdict.promote else None)
        retry("tagging the versions", lambda: tag_versions(
            self.store, versions, {"gate_verdict": outcome, "gate_reason": reason}))
        return outcome, reason

    def promote(self, versions: dict[str, str], expected: dict[str, str] | None
                ) -> tuple[bool, str]:
        """Move the alias to ``versions`` if it still points at ``expected``, then announce.
        Returns (promoted, a note: why not, or what went wrong after)."""
        from streams.hot_swap import announce
        from streams.registry import alias_versions, set_champion

        s = self.settings
        with promotion_lock(s.redis) as held:
            if not held:
                return False, "another trainer is promoting (promotion lock held)"
            now = retry("reading the champion alias",
                        lambda: alias_versions(self.store, list(versions)))
            if now != expected:
                return False, (f"the champion moved to {now} while this challenger trained "
                               f"against {expected}")
            retry("moving the champion alias", lambda: set_champion(self.store, versions))

        def announce_or_raise() -> None:
            if not announce(s.kafka, s.topic_model_updates, versions, s.mlflow_uri):
                raise RuntimeError(f"no acknowledgement from {s.topic_model_updates}")

        try:
            retry("announcing the champion", announce_or_raise)
        except RuntimeError as exc:
            return True, f"announcing failed ({exc}): workers keep the old model until restarted"
        return True, ""

    def run_forever(self, stop: threading.Event, poll_s: float = 10.0) -> None:
        """Rounds whenever ``round_due`` says so, until ``stop`` is set; with no champion
        yet, one at once. The status turns "ready" once the trainer waits for triggers."""
        from streams.consumer import TopicSizes

        s = self.settings
        with TopicSizes(s.kafka) as sizes:
            def topic_size() -> int:
                return retry("sizing the topic", lambda: sizes.size(s.topic_interactions))

            last_round, last_size = float("-inf"), -1  # -1: no champion, a round at once
            if self.champion_versions() is not None:
                last_round, last_size = time.monotonic(), topic_size()
            log.info("trainer ready: %s events in %s so far; champion %s", max(last_size, 0),
                     s.topic_interactions,
                     "present" if last_size >= 0 else "none: a round now")
            while not stop.is_set():
                size = topic_size()
                if last_size < 0 or round_due(s, time.monotonic() - last_round,
                                              size - last_size):
                    last_round, last_size = time.monotonic(), size
                    self.run_round()
                if self.status.current.state != "ready":
                    self.status.update(state="ready")
                stop.wait(poll_s)
