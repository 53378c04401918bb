"""Promotion through a live experiment (``STREAMREC_TRAINER_PROMOTION=experiment``).

The offline gate judges a challenger on one slice of the past; users judge it live. With
this setting a challenger the gate passes is not promoted: its versions get the
``challenger`` alias and go live against the champion in an experiment named
``trial-<time>`` (``STREAMREC_TRAINER_TRIAL_MODE``, interleaving by default: it decides with
far fewer events). Each later round first settles the trial, and trains nothing new while
one is undecided:

- the challenger wins: it is promoted (the trainer's own lock and compare-and-set against
  the champion the trial started with, kept under the ``trial-control`` alias: a champion
  moved meanwhile, e.g. by ``train --champion --force``, is not overwritten), the trial
  concluded with it as the winner;
- the champion wins: the trial is concluded, nothing moves;
- still undecided after ``STREAMREC_TRAINER_TRIAL_MAX_HOURS``: the trial is stopped and
  the champion stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.retrying import retry
from services.settings import Settings
from streams.experiment import Experiment
from streams.messages import version_string
from streams.status import RoundSummary

if TYPE_CHECKING:
    from streams.experiment_report import ExperimentReport

log = logging.getLogger(__name__)
TRIAL_PREFIX = "trial-"
CHALLENGER = "challenger"
CONTROL = "trial-control"


class LiveTrial:
    """Starts and settles the trainer's live trials. ``promote`` is the trainer's
    (versions, expected champion) -> (promoted, note)."""

    def __init__(self, settings: Settings, store: Any,
                 promote: Callable[[dict[str, str], dict[str, str] | None], tuple[bool, str]],
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.store, self.promote, self.clock = settings, store, promote, clock

    def running(self) -> Experiment | None:
        """The experiment live now, if any: the trainer's trial or a person's."""
        from streams.experiment_store import declarations, running

        return running(declarations(self.settings.kafka, self.settings.topic_experiments))

    def start(self, versions: dict[str, str], champion: dict[str, str]) -> RoundSummary:
        """Put the gated challenger at ``versions`` live against ``champion``, the versions
        the champion alias names now (kept as ``trial-control`` for the compare-and-set)."""
        import redis

        from streams.experiment_control import ExperimentRefused, one_declaration_at_a_time

        s = self.settings
        try:
            # One turn of the declaration lock from the check to the declaration: the
            # aliases moved before it, so a person's experiment started meanwhile could
            # find its `challenger` variant serving this challenger.
            with (redis.Redis.from_url(s.redis, socket_timeout=5) as client,
                  one_declaration_at_a_time(client, s.topic_experiments)):
                refused, name = self._start_in_turn(versions, champion, client)
        except ExperimentRefused as exc:
            return RoundSummary("rejected", f"the gate passed, but the live trial could not "
                                f"start: {exc}", versions)
        if refused is not None:
            return RoundSummary("rejected", f"the gate passed, but {refused}", versions)
        return RoundSummary("trial", f"the gate passed; live trial {name} started "
                            f"({s.trainer_trial_mode}): {version_string(versions)} against "
                            "the champion", versions)

    def _start_in_turn(self, versions: dict[str, str], champion: dict[str, str], client: Any
                       ) -> tuple[str | None, str]:
        """(why no trial starts, None when it started; the trial's name), in a turn of
        the declaration lock."""
        from streams.experiment_control import new_experiment, start, still_in_turn
        from streams.experiment_store import declarations, running
        from streams.registry import alias_versions, set_champion

        s = self.settings
        other = retry("reading the experiments", lambda: running(declarations(
            s.kafka, s.topic_experiments)))
        if other is not None:  # before the aliases move: its variants may name them
            return f"experiment {other.name!r} is running, so no live trial starts", ""
        now = retry("reading the champion alias",
                    lambda: alias_versions(self.store, list(champion)))
        if now != champion:  # a trial against another champion could only be refused later
            return (f"the champion moved to {version_string(now) if now else 'none'} while "
                    f"this challenger trained against {version_string(champion)}", "")
        name = f"{TRIAL_PREFIX}{int(self.clock())}"
        still_in_turn()  # the reads above may have outlasted the lock (a slow registry),
        retry("moving the trial-control alias",  # and a person's experiment naming
              lambda: set_champion(self.store, champion, alias=CONTROL))  # `challenger`
        still_in_turn()  # started meanwhile would serve this challenger
        retry("moving the challenger alias",
              lambda: set_champion(self.store, versions, alias=CHALLENGER))
        experiment = new_experiment(name, [("champion", "champion", 0.5),
                                           (CHALLENGER, version_string(versions), 0.5)],
                                    mode=s.trainer_trial_mode,
                                    started_us=int(self.clock() * 1e6))
        start(s.kafka, s.topic_experiments, self.store, experiment, client)
        return None, name

    def settle(self) -> RoundSummary | None:
        """Conclude the running trial when its test has decided or its time is up; a
        summary for the round (None: no experiment runs, the round trains as usual;
        skipped while a person's runs)."""
        trial = retry("reading the experiments", self.running)
        if trial is None:
            return None
        if not _is_trial(trial):  # a challenger trained now could not go live: it trained
            # for nothing, each round for as long as the experiment runs
            return RoundSummary("skipped", f"experiment {trial.name!r} is running, so no "
                                "challenger could go live against the champion; none trains "
                                "until it stops")
        summary = self._judge(trial)
        if summary.outcome != "trial":
            self._tag(summary)
        return summary

    def _judge(self, trial: Experiment) -> RoundSummary:
        """The trial's outcome as its test and its time say, promoting or stopping it."""
        import redis

        from streams.experiment_report import status

        with redis.Redis.from_url(self.settings.redis, socket_timeout=5) as client:
            report = retry("reading the trial's tallies", lambda: status(client, trial))
            return self._act_in_turn(trial, report, client)

    def _act_in_turn(self, trial: Experiment, report: ExperimentReport, client: Any
                     ) -> RoundSummary:
        """``_act`` in a turn of the declaration lock, on the trial as it stands then: read
        before the lock, a person's stop or conclusion meanwhile was overwritten by the
        trainer's, and its challenger promoted all the same."""
        from streams.experiment_control import (
            ExperimentConflict,
            UnknownExperiment,
            find,
            one_declaration_at_a_time,
        )

        s = self.settings
        versions = _parse(trial.variants[1].model)
        try:
            with one_declaration_at_a_time(client, s.topic_experiments):
                try:
                    now: Experiment | None = find(s.kafka, s.topic_experiments, trial.name)
                except UnknownExperiment:  # withdrawn
                    now = None
                if now is None or now.state != "running" or now.started_us != trial.started_us:
                    winner = now.winner if now is not None else None
                    return RoundSummary("rejected", f"live trial {trial.name} was stopped "
                                        f"by someone else (winner {winner or 'none'}); the "
                                        "trainer moved nothing", versions)
                return self._act(trial, report, client)
        except ExperimentConflict as exc:  # the lock stayed held: settled next round
            return RoundSummary("trial", f"live trial {trial.name}: not settled this round "
                                f"({exc})", versions)

    def _act(self, trial: Experiment, report: ExperimentReport, client: Any) -> RoundSummary:
        """Promote or stop ``trial`` as ``report`` says, in the caller's turn of the
        declaration lock in ``client`` (a sync Redis client)."""
        from streams.experiment_control import stop

        s = self.settings

        def stop_trial(winner: str | None = None) -> None:
            retry("stopping the trial", lambda: stop(s.kafka, s.topic_experiments, client,
                                                     trial.name, winner))

        challenger = trial.variants[1]
        versions = _parse(challenger.model)
        if report.winner == challenger.name:
            promoted, note = self._promote(versions)
            if note in (LOCK_HELD, LOCK_LOST):  # the win stands: promote it in a later round
                return RoundSummary("trial", f"live trial {trial.name}: the challenger wins "
                                    f"({_evidence(report)}), but {note}; trying again next "
                                    "round", versions)
            stop_trial(challenger.name)
            outcome = "promoted" if promoted else "rejected"
            return RoundSummary(outcome, "; ".join(filter(None, [
                f"live trial {trial.name}: the challenger wins ({_evidence(report)})", note])),
                versions)
        if report.winner is not None:
            stop_trial(report.winner)
            return RoundSummary("rejected", f"live trial {trial.name}: the champion wins "
                                f"({_evidence(report)})", versions)
        hours = (self.clock() - trial.started_us / 1e6) / 3600
        if hours >= s.trainer_trial_max_hours:
            stop_trial()
            return RoundSummary("rejected", f"live trial {trial.name}: no verdict in "
                                f"{hours:.1f} h ({_evidence(report)}); the champion stays",
                                versions)
        return RoundSummary("trial", f"live trial {trial.name} running for {hours:.1f} h: "
                            f"{report.verdict} ({_evidence(report)})", versions)

    def _tag(self, summary: RoundSummary) -> None:
        """The trial's outcome on the challenger's versions, whose gate tags say ``trial``
        for good otherwise; a registry that refuses is logged (the outcome stands)."""
        from streams.registry import tag_versions

        try:
            retry("tagging the versions", lambda: tag_versions(self.store, summary.versions, {
                "trial_outcome": summary.outcome, "trial_reason": summary.reason}))
        except Exception as exc:  # noqa: BLE001 - the tags only tell why
            log.error("the versions %s were not tagged with their trial's outcome (%s): %s",
                      summary.versions, summary.outcome, exc)

    def _promote(self, versions: dict[str, str]) -> tuple[bool, str]:
        """The trainer's promotion of a won trial, unless a round before this one promoted
        it and then failed to stop the trial: its compare-and-set against the control then
        found the challenger itself, and the model serving was reported rejected."""
        from streams.registry import alias_versions

        if retry("reading the champion alias",
                 lambda: alias_versions(self.store, list(versions))) == versions:
            return True, "promoted by an earlier round, which could not stop the trial"
        return self.promote(versions, self._control(versions))

    def _control(self, versions: dict[str, str]) -> dict[str, str] | None:
        """The champion the trial started against (None, when the alias is missing, makes
        the compare-and-set refuse: nothing is promoted over an unknown champion)."""
        from streams.registry import alias_versions

        return retry("reading the trial-control alias",
                     lambda: alias_versions(self.store, list(versions), alias=CONTROL))


LOCK_HELD = "another trainer is promoting (promotion lock held)"
LOCK_LOST = ("the promotion lock expired before the alias moved (a slow registry); nothing "
             "moved")


def _is_trial(experiment: Experiment) -> bool:
    """Whether ``experiment`` has the shape ``LiveTrial.start`` declares: its name, the
    champion alias, then the challenger at fixed versions. By its name alone a person's
    ``trial-checkout`` was settled as the trainer's: stopped for them, or its variant
    promoted over a ``trial-control`` alias left from an earlier trial."""
    from streams.registry import parse_versions

    variants = [(v.name, v.model) for v in experiment.variants]
    return (experiment.name.startswith(TRIAL_PREFIX) and len(variants) == 2
            and variants[0] == ("champion", "champion") and variants[1][0] == CHALLENGER
            and parse_versions(variants[1][1]) is not None)


def _parse(model: str) -> dict[str, str]:
    from streams.registry import parse_versions

    versions = parse_versions(model)
    if versions is None:
        raise ValueError(f"a trial's challenger names versions, not {model!r}")
    return versions


def _evidence(report: Any) -> str:
    """The deciding test, in a few words: its p-value and the lists behind it."""
    key = "interleaving" if "interleaving" in report.tests else next(
        (k for k in report.tests if k.endswith("NDCG@10")), None)
    if key is None:
        return "no test yet"
    test = report.tests[key]
    if "wins" in test:
        return f"always-valid p {test['p_value']:.3g}, credits {test['wins'][0]}:{test['wins'][1]}"
    lists = sum(v.lists for v in report.variants)
    return f"always-valid p {test['p_value']:.3g}, {lists:,} lists counted"
