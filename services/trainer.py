"""The trainer: periodic retraining behind a champion/challenger gate.

One round (``Trainer.run_round``):
1. History: the ``interactions`` topic from its beginning to its end at the start of the
   read, validated with the event schema (what fails is already in the dead-letter topic),
   in event-time order. The topic is the one store every event reaches, so nothing else
   needs archiving; its retention bounds how far back the trainer learns.
2. The newest ``trainer_holdout_fraction`` of events is held out for the gate.
3. Challenger: SASRec + NeuMF ranker trained on the rest, with id maps seeded from the
   champion's and weights warm-started from it (``model.weights``).
4. Gate (``model.evaluation.gate``): both models scored on the held-out slice, both protocols.
5. MLflow: the challenger's runs with both models' gate metrics, a comparison chart and
   the verdict (registered, alias untouched); the verdict also tags the model versions.
6. Promotion, when the gate says so: under a Redis lock, compare-and-set the alias (the
   champion must still be the one the challenger beat, so two trainers cannot both
   promote), then announce on ``model-updates`` for the workers.
Registry, broker and Redis calls are retried with backoff. A round that fails, or trains
non-finite weights, promotes nothing and says why.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from services.settings import Settings
from services.stack import mlflow_store
from streams.events import Event, InvalidEvent, parse

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


@dataclass(frozen=True)
class RoundResult:
    outcome: str                  # promoted | rejected | skipped | failed
    reason: str
    versions: dict[str, str] = field(default_factory=dict)   # the challenger's, registered
    challenger: dict | None = None                           # gate reports
    champion: dict | None = None
    events: int = 0


class Trainer:
    def __init__(self, settings: Settings, seed: int = 42) -> None:
        self.settings, self.seed = settings, seed
        self.store = mlflow_store(settings)
        self.store.ensure()

    def history(self) -> list[Event]:
        """Valid events of the interactions topic, in event-time order (ties by id)."""
        from streams.consumer import read_to_end

        def read() -> list[Event]:
            events, rejected = [], 0
            for record in read_to_end(self.settings.kafka_servers,
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

    def run_round(self) -> RoundResult:
        try:
            result = self._round()
        except Exception as exc:  # noqa: BLE001 - a failed round must not stop the service
            log.exception("round failed, nothing promoted")
            result = RoundResult("failed", f"{type(exc).__name__}: {exc}")
        log.info("round outcome=%s events=%d versions=%s reason=%s", result.outcome,
                 result.events, result.versions, result.reason)
        return result

    def _round(self) -> RoundResult:
        from model.data import IdMap, build_sequences, leave_last_out, time_split
        from model.evaluation.gate import KnownPrefix, decide, gate_cases
        from model.evaluation.protocols import evaluate_cases
        from model.pipeline import PipelineScorer
        from model.weights import all_finite
        from services.training_run import train_with_progress
        from streams.registry import (
            ROLE_NAMES,
            alias_versions,
            comparison_figure,
            load_champion,
            log_trained,
            tag_versions,
        )

        s, names = self.settings, list(ROLE_NAMES)
        events = self.history()
        if len(events) < s.trainer_min_events:
            return RoundResult("skipped", f"{len(events):,} events in {s.topic_interactions}, "
                               f"fewer than trainer_min_events ({s.trainer_min_events:,})",
                               events=len(events))
        before = retry("reading the champion alias", lambda: alias_versions(self.store, names))
        champion = retry("loading the champion", lambda: load_champion(self.store)) if before else None
        past, recent = time_split(events, 1 - s.trainer_holdout_fraction)
        seqs = build_sequences(
            past, users=IdMap.from_list(champion.users.to_list()) if champion else None,
            items=IdMap.from_list(champion.items.to_list()) if champion else None)
        cases = gate_cases(seqs, recent)
        if not len(cases.users):  # known before training: do not train for nothing
            return RoundResult("skipped", "no test cases in the held-out slice (no user there "
                               "has history before it)", events=len(events))
        split = leave_last_out(seqs)
        log.info("round: %d events, %d for training, newest %d held out; champion %s",
                 len(events), len(past), len(recent), champion.version if champion else "none")
        trained, sasrec_cfg, neumf_cfg = train_with_progress(
            split, ["sasrec", "pipeline"], s.trainer_epochs, self.seed,
            init={"retriever": champion.retriever, "ranker": champion.ranker} if champion else None)
        finite = all(t.result is not None and all_finite(t.result.model)
                     for t in trained.values())

        def gate(scorer: object) -> dict:
            return evaluate_cases(scorer, cases.users, cases.histories, cases.targets,  # type: ignore[arg-type]
                                  seqs.num_items)

        reports = {"challenger": gate(trained["pipeline"].scorer)}
        if champion is not None:
            scorer = KnownPrefix(PipelineScorer.of(champion.retriever, champion.ranker,
                                                   neumf_cfg.candidates, exclude_seen=False),
                                 len(champion.users), len(champion.items), seqs.num_items)
            reports["champion"] = gate(scorer)
        verdict = decide(reports["challenger"], reports.get("champion"),
                         min_gain=s.trainer_min_gain, finite=finite)
        metrics = {f"gate_{who}_{p}_{m}".replace("@", "_at_"): v
                   for who, report in reports.items() for p in ("full", "sampled")
                   for m, v in report[p].items()}
        tags = {"gate_verdict": "promote" if verdict.promote else "reject",
                "gate_reason": verdict.reason,
                "champion_before": champion.version if champion else "none"}
        logged = log_trained(
            self.store, s.mlflow_experiment, trained, split, "trainer",
            {"sasrec": sasrec_cfg.to_dict(), "neumf": neumf_cfg.to_dict()},
            {"data": f"topic {s.topic_interactions}", "events": len(events),
             "gate_events": len(recent), "gate_cases": reports["challenger"]["users"]},
            metrics=metrics, tags=tags,
            figures={"champion_vs_challenger.png": comparison_figure(
                reports, f"gate: newest {len(recent):,} events, {verdict.metric}")})
        versions = {n: v for run in logged.values() for n, v in run.versions.items()}
        result = RoundResult("rejected", verdict.reason, versions, reports["challenger"],
                             reports.get("champion"), len(events))
        if verdict.promote:
            promoted, why = self.promote(versions, before)
            reason = "; ".join(filter(None, [verdict.reason, why])) if promoted else why
            result = RoundResult("promoted" if promoted else "rejected", reason, versions,
                                 result.challenger, result.champion, len(events))
        retry("tagging the versions", lambda: tag_versions(
            self.store, versions, {"gate_verdict": result.outcome, "gate_reason": result.reason}))
        return result

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
            if not announce(s.kafka_servers, s.topic_model_updates, versions, s.mlflow_uri):
                raise RuntimeError(f"no acknowledgement from {s.topic_model_updates}")

        try:
            retry("announcing the champion", announce_or_raise)
        except RuntimeError as exc:
            return True, f"announcing failed ({exc}): workers keep the old model until restarted"
        return True, ""

    def run_forever(self, stop: threading.Event, poll_s: float = 10.0) -> None:
        """Rounds whenever ``trainer_interval_min`` has passed or ``trainer_every_events``
        new events arrived, until ``stop`` is set; with no champion yet, one at once."""
        from streams.consumer import TopicSizes
        from streams.registry import ROLE_NAMES, alias_versions

        s = self.settings
        with TopicSizes(s.kafka_servers) as sizes:
            def topic_size() -> int:
                return retry("sizing the topic", lambda: sizes.size(s.topic_interactions))

            last_round, last_size = float("-inf"), -1
            if retry("reading the champion alias", lambda: alias_versions(
                    self.store, list(ROLE_NAMES))) is not None:
                last_round, last_size = time.monotonic(), topic_size()
            log.info("trainer ready: %s events in %s so far; champion %s", max(last_size, 0),
                     s.topic_interactions,
                     "present" if last_size >= 0 else "none: a round now")
            while not stop.is_set():
                size = topic_size()
                due_time = s.trainer_interval_min > 0 and \
                    time.monotonic() - last_round >= s.trainer_interval_min * 60
                due_events = s.trainer_every_events > 0 and \
                    size - max(last_size, 0) >= s.trainer_every_events
                if last_size < 0 or due_time or due_events:
                    last_round, last_size = time.monotonic(), size
                    self.run_round()
                stop.wait(poll_s)

