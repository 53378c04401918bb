"""A running experiment inside a worker: which bundle answers each user, the tag each list
carries, and the online tallies judged from the stream itself.

Per micro-batch the batch step (``streams.steps.BatchStep``) asks ``LiveExperiment``:

1. ``recommend(users, keys, champion, ask, popular)``: A/B groups the batch by variant and
   asks each variant's bundle for its users; interleaving asks both bundles for every
   user and drafts one list per event, with coins seeded by the event id (``rng_for``),
   so a redelivered event gets the same list from any worker. A variant whose bundle is
   not loaded (it failed, or is still loading) is served by the control, and its lists
   say ``served_by``.
2. ``track(updates, lists)``, per event in order: the event first judges the lists its
   user was shown before it (often earlier in the same micro-batch), then its own list
   joins them. The newest gives HR@10, NDCG@10 and MRR of this event's item (A/B) or
   credits the model whose item the user took (interleaving); each of the user's last
   ``WINDOW`` lists also waits up to ``WINDOW`` events for a click (an interaction with
   one of its items) and a conversion (an ``add_to_cart`` or ``purchase`` of one).

Tallies are kept per worker and written to Redis by the follower
(``streams.experiment_follower``); ``status`` merges the workers' (a user seen by two
workers, after a rebalance, adds up). Pending lists live in memory only: a rebalance
loses at most the judgement of each moved user's last lists.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.experiments.interleaving import (
    CREDIT_TO_A,
    Interleaved,
    credit,
    rng_for,
    team_draft,
)
from model.experiments.online import VariantTally, list_outcome, metric_names
from model.pipeline import Recommendation
from streams.experiment import POPULARITY, Experiment, Variant
from streams.messages import CHAMPION, NO_MODEL, ExperimentTag, RecommendationList

WINDOW = 5  # events a list waits for a click or a conversion
# A user's lists waiting for their window: WINDOW when every event judges them, more when
# late events (which judge nothing) add lists; past this the oldest goes unjudged.
MAX_PENDING = 2 * WINDOW
CONVERSIONS = frozenset({"add_to_cart", "purchase"})
DELAYED = (f"click@{WINDOW}", f"conversion@{WINDOW}")
METRICS = (*metric_names(), *DELAYED)
INTERLEAVED = "interleaved"  # the variant name interleaved lists carry
CREDITS = ":credits"  # the credits' tally among a worker's stored rows (no variant name has ":")
STAND_IN = "stand-in "  # ``Tallies.served``: lists another variant's model answered
MAX_USERS = 200_000  # users whose pending lists a worker remembers (least recent go first)

Ask = Callable[[list[int], Any], Sequence[Recommendation | None]]
# ``Ask``'s answer for a user whose model failed on the batch (it raised, or scored NaN),
# told apart from None (the model cannot serve this user yet): popularity answers either,
# but a failure is the model's fault, not the variant's way of serving new users, so its
# list is judged a miss for the variant (``shown``). Compared by identity.
FAILED = Recommendation([], [])
Popular = Callable[[int], Recommendation]  # recent popularity for user i of the batch


@dataclass
class Pending:
    """A list shown, waiting for its user's next events."""

    variant: str
    items: tuple[str, ...]
    teams: tuple[int, ...] | None = None  # interleaving: the team of each item
    left: int = WINDOW
    clicked: bool = False
    converted: bool = False


@dataclass(frozen=True, slots=True)
class Interaction:
    """What an experiment reads of one event: its user, item and type; a ``late`` event
    (older than its session's newest, ``streams.sessions.is_late``) happened before the
    lists its user was shown since, so it judges none of them."""

    user: str
    item: str
    kind: str
    late: bool = False


def _credit_tally() -> VariantTally:
    return VariantTally((CREDIT_TO_A,))


@dataclass
class Tallies:
    """What one worker has judged: per variant (A/B) or, per user, the interleaving
    credits (``CREDIT_TO_A``: 1 for a credit to A, 0 for one to B); and ``served``, per
    variant the lists each model version answered for it (a variant named by an alias
    serves whatever the alias names when its worker loads it, and a stand-in serves a
    variant that is not loaded), so that ``conclude --promote`` promotes what was judged."""

    variants: dict[str, VariantTally] = field(default_factory=dict)
    credits: VariantTally = field(default_factory=_credit_tally)
    served: dict[str, dict[str, int]] = field(default_factory=dict)

    def variant(self, name: str) -> VariantTally:
        if name not in self.variants:
            self.variants[name] = VariantTally(METRICS)
        return self.variants[name]

    def serve(self, variant: str, version: str, lists: int) -> None:
        counts = self.served.setdefault(variant, {})
        counts[version] = counts.get(version, 0) + lists

    def wins(self) -> tuple[int, int]:
        """Credits to A and to B, over every user."""
        rows = self.credits.per_user.values()
        to_a, given = sum(r[0] for r in rows), sum(r[1] for r in rows)
        return round(to_a), round(given - to_a)

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        """A plain JSON-able dict; ``rows`` False leaves the users' rows out (stored apart,
        as they change: ``streams.experiment_store.write_tallies``)."""
        return {"variants": {n: t.to_dict(rows) for n, t in self.variants.items()},
                "credits": self.credits.to_dict(rows), "served": self.served}

    def _tally(self, name: str) -> VariantTally:
        """A variant's tally, or the credits' (``CREDITS``)."""
        return self.credits if name == CREDITS else self.variant(name)

    def take_changed(self) -> dict[str, dict[str, list[float]]]:
        """Per tally (a variant's name, or ``CREDITS``) the rows of the users changed since
        the last call, which then forgets them."""
        changed = {name: self._tally(name).take_changed() for name in [*self.variants, CREDITS]}
        return {name: rows for name, rows in changed.items() if rows}

    def mark_changed(self, rows: dict[str, dict[str, list[float]]]) -> None:
        """Changed again: ``take_changed``'s rows, when writing them failed."""
        for name, by_user in rows.items():
            self._tally(name).changed.update(by_user)

    def fill(self, rows: dict[str, dict[str, list[float]]]) -> None:
        """Put stored rows back (per tally, per user), as ``take_changed`` gave them."""
        for name, by_user in rows.items():
            tally = self._tally(name)
            width = 2 * len(tally.metrics)
            if any(len(row) != width for row in by_user.values()):
                raise ValueError(f"each user's row of {name} must hold {width} numbers")
            tally.per_user.update(by_user)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tallies:
        """A tally written before credits were kept per user (``wins`` alone) starts its
        credits afresh: a count without its users cannot be tested. One written before
        ``served`` was kept has none."""
        credits = (VariantTally.from_dict(data["credits"]) if "credits" in data
                   else _credit_tally())
        served = {str(v): {str(k): int(n) for k, n in counts.items()}
                  for v, counts in data.get("served", {}).items()}
        return cls({n: VariantTally.from_dict(t) for n, t in data["variants"].items()},
                   credits, served)

    def merge(self, other: Tallies) -> Tallies:
        empty = VariantTally(METRICS)
        variants = {n: self.variants.get(n, empty).merge(other.variants.get(n, empty))
                    for n in sorted(set(self.variants) | set(other.variants))}
        merged = Tallies(variants, self.credits.merge(other.credits))
        for part in (self, other):
            for variant, counts in part.served.items():
                for version, lists in counts.items():
                    merged.serve(variant, version, lists)
        return merged


def served_label(served_by: str | None, bundle: Any) -> str:
    """What answered a variant's lists, as ``Tallies.served`` counts it: the version
    string of its bundle (``popularity`` for none), after ``stand-in <variant>: `` where
    another variant's model stood in for one not loaded."""
    version = POPULARITY if bundle is None else getattr(bundle, "version", NO_MODEL)
    return version if served_by is None else f"{STAND_IN}{served_by}: {version}"


class LiveExperiment:
    """One running experiment in one worker. ``bundles`` maps a variant name to its loaded
    bundle; variants served by the champion alias or by popularity need none."""

    def __init__(self, experiment: Experiment, bundles: dict[str, Any] | None = None) -> None:
        self.experiment = experiment
        self.bundles: dict[str, Any] = dict(bundles or {})
        self.tallies = Tallies()
        self.pending: OrderedDict[str, deque[Pending]] = OrderedDict()

    @property
    def name(self) -> str:
        return self.experiment.name

    def track(self, updates: Sequence[Interaction], lists: Sequence[RecommendationList]
              ) -> None:
        """Per event of the micro-batch, in order: judge the lists its user saw before it
        (unless the event is late), then remember the list it got. In order, because a
        user's next event is often in the same micro-batch."""
        for event, record in zip(updates, lists):
            if not event.late:
                self.observe(event.user, event.item, event.kind)
            self.shown(record)

    def observe(self, user: str, item: str, kind: str) -> None:
        """Judge ``user``'s pending lists by their event (``item`` of type ``kind``)."""
        waiting = self.pending.get(user)
        if not waiting:
            return
        self._judge_next(user, waiting[-1], item)
        for shown in waiting:
            self._judge_delayed(shown, item, kind)
        while waiting and waiting[0].left <= 0:
            self._resolve(user, waiting.popleft())

    def _judge_next(self, user: str, shown: Pending, item: str) -> None:
        if shown.left != WINDOW:  # judged already: only the first event after a list is
            return
        if shown.teams is None:
            self.tallies.variant(shown.variant).add(user, list_outcome(shown.items,
                                                                       item).as_dict())
        elif (team := credit(Interleaved(shown.items, shown.teams), item)) is not None:
            self.tallies.credits.add(user, {CREDIT_TO_A: float(team == 0)})

    @staticmethod
    def _judge_delayed(shown: Pending, item: str, kind: str) -> None:
        shown.left -= 1
        if item in shown.items:
            shown.clicked = True
            shown.converted = shown.converted or kind in CONVERSIONS

    def _resolve(self, user: str, shown: Pending) -> None:
        if shown.teams is None:
            self.tallies.variant(shown.variant).add(user, dict(zip(
                DELAYED, (float(shown.clicked), float(shown.converted)))), new_list=False)

    def variant_of(self, user_id: str) -> Variant | None:
        return self.experiment.variant_of(user_id)

    def recommend(self, users: Sequence[str], keys: Sequence[str], champion: Any, ask: Ask,
                  popular: Popular
                  ) -> tuple[list[Recommendation | None], list[str | None],
                             list[ExperimentTag | None]]:
        """Per user of the batch: the list (None: popularity answers), the version of the
        bundle that served it (None: the champion's) and the experiment tag (None: held
        back). ``ask(indices, bundle)`` runs a bundle on those users of the batch;
        ``popular(i)`` is recent popularity for user ``i``; ``keys`` (event ids) seed the
        interleaving coins."""
        arms = [self.variant_of(u) for u in users]
        recs: list[Recommendation | None] = [None] * len(users)
        versions: list[str | None] = [None] * len(users)
        tags: list[ExperimentTag | None] = [None] * len(users)
        held = [i for i, arm in enumerate(arms) if arm is None]
        for i, rec in zip(held, self._answers(held, champion, ask, popular)):
            recs[i] = None if rec is FAILED else rec  # popularity, as outside experiments
        if self.experiment.mode == "interleave":
            self._interleave([i for i, arm in enumerate(arms) if arm is not None], keys,
                             champion, ask, popular, recs, tags)
            return recs, versions, tags
        for variant in self.experiment.variants:
            idx = [i for i, arm in enumerate(arms) if arm is not None and arm.name == variant.name]
            served_by, bundle = self._bundle(variant, champion)
            # Popularity's users get None: the batch step builds their list, labelled
            # path "popularity" and version "none", as it is, not as the champion's.
            answers = ask(idx, bundle) if bundle is not None and idx else [None] * len(idx)
            failed = sum(rec is FAILED for rec in answers)
            self._count_served(variant.name, served_label(served_by, bundle),
                               len(idx) - failed, failed, served_by)
            for i, rec in zip(idx, answers):
                recs[i] = None if rec is FAILED else rec
                versions[i] = getattr(bundle, "version", NO_MODEL)
                # A stand-in's failure is not the variant's: its list stays unjudged.
                tags[i] = ExperimentTag(self.name, variant.name, served_by if served_by
                                        else POPULARITY if rec is FAILED else None)
        return recs, versions, tags

    def _count_served(self, variant: str, label: str, lists: int, failed: int = 0,
                      stand_in: str | None = None) -> None:
        """``Tallies.served``: ``lists`` answered as ``label``, and ``failed`` lists whose
        model (``stand_in``'s, when another variant's stood in) failed, which popularity
        answered."""
        for name, count in ((label, lists),
                            (served_label(stand_in or POPULARITY, None), failed)):
            if count:
                self.tallies.serve(variant, name, count)

    def _count_failed(self, variant: str, other: str, other_bundle: Any,
                      mine: Sequence[Recommendation | None],
                      theirs: Sequence[Recommendation | None]) -> None:
        """``Tallies.served`` for an interleaved ``variant``'s failed lists: what went out
        instead, the other model's list alone, or popularity where it had none."""
        alone = sum(m is FAILED and t is not FAILED and t is not None
                    for m, t in zip(mine, theirs))
        failed = sum(m is FAILED for m in mine)
        for label, count in ((served_label(other, other_bundle), alone),
                             (served_label(POPULARITY, None), failed - alone)):
            if count:
                self.tallies.serve(variant, label, count)

    @staticmethod
    def _answers(idx: list[int], bundle: Any, ask: Ask, popular: Popular
                 ) -> Sequence[Recommendation | None]:
        """The lists ``bundle`` (None: popularity) gives users ``idx`` of the batch."""
        if not idx:
            return []
        return ask(idx, bundle) if bundle is not None else [popular(i) for i in idx]

    def _bundle(self, variant: Variant, champion: Any) -> tuple[str | None, Any]:
        """(the variant that actually serves, when not ``variant`` itself; its bundle,
        None for popularity). A bundle that is not loaded falls back to the control."""
        if variant.model == POPULARITY:
            return None, None
        if variant.model == CHAMPION:
            return None, champion
        if variant.name in self.bundles:
            return None, self.bundles[variant.name]
        control = self.experiment.control
        if variant is control:  # the control itself is missing: the champion serves it
            return CHAMPION, champion
        served_by, bundle = self._bundle(control, champion)
        return served_by or control.name, bundle

    def _interleave(self, idx: list[int], keys: Sequence[str], champion: Any, ask: Ask,
                    popular: Popular,
                    recs: list[Recommendation | None], tags: list[ExperimentTag | None]
                    ) -> None:
        """One team-draft list per user ``idx`` of the batch, from both variants' lists.
        A variant that is not loaded drafts its stand-in's list (``_bundle``), and the
        tag's ``served_by`` names that stand-in, as an A/B list's does."""
        served = [self._bundle(v, champion) for v in self.experiment.variants]
        a_lists = self._answers(idx, served[0][1], ask, popular)
        # One bundle for both (a stand-in, an A/A test): asked once. Asked again for the
        # same events, its encoder caches, which already hold them, were rebuilt for every
        # user, or stepped the newest item in twice where a session ends in a run of one.
        b_lists = (a_lists if served[1][1] is served[0][1]
                   else self._answers(idx, served[1][1], ask, popular))
        names = [v.name for v in self.experiment.variants]
        for side, (by, bundle) in enumerate(served):
            mine, theirs = (a_lists, b_lists)[side], (a_lists, b_lists)[1 - side]
            self._count_failed(names[side], names[1 - side], served[1 - side][1], mine,
                               theirs)
            failed = sum(rec is FAILED for rec in mine)
            self._count_served(names[side], served_label(by, bundle), len(idx) - failed)
        stand_in = next((by for by, _ in served if by is not None), None)
        for i, a, b in zip(idx, a_lists, b_lists):
            if (a is None and b is None) or (a is FAILED and b is FAILED):
                continue  # neither model serves this user yet, or both failed:
                # popularity, untagged, as nothing is compared (drafted, it went out as
                # a model list)
            # A model that cannot serve this user yet answers with popularity, as it does
            # for its users in production. Drafting an empty list instead handed every
            # position, and every credit, to the other model. That is what a model that
            # failed on this user gets (``FAILED`` is empty): the failure is its own, so
            # the other model's list goes out alone and earns the user's credit. Left
            # untagged, both teams lost the user, and a model failing on the users it
            # serves worst could win.
            a, b = (r if r is not None else popular(i) for r in (a, b))
            drafted = team_draft(a.items, b.items, max(len(a.items), len(b.items)),
                                 rng_for(f"{self.experiment.salt}:{keys[i]}"))
            if not drafted.items:
                continue  # no list on either side yet (no popularity either): untagged
            scores = {item: s for r in (b, a) for item, s in zip(r.items, r.scores)}
            recs[i] = Recommendation(list(drafted.items), [scores[x] for x in drafted.items])
            tags[i] = ExperimentTag(self.name, INTERLEAVED, stand_in,
                                    teams=[names[t] for t in drafted.teams])

    def shown(self, record: RecommendationList) -> None:
        """Remember a tagged list just published, for its user's next events. A list a
        stand-in served (``served_by``: the variant's model had not loaded) is not
        judged: the test compares the variants' models, and a variant would otherwise be
        scored on the control's lists while it loads, or for as long as it fails to.

        A list popularity answered because the variant's loaded model failed on this user
        (``served_by: popularity``) is judged as the variant's list holding nothing: a
        miss. Left out, a model that fails on some users (a NaN score, an unreadable item
        row) was judged on the users it served alone, and could win a tie."""
        tag = record.experiment
        if tag is None:
            return
        names = [v.name for v in self.experiment.variants]
        teams = tuple(names.index(t) for t in tag.teams) if tag.teams else None
        if teams is None:  # served is assigned, for the sample-ratio check: a variant
            # whose users do not come back for a judged list is not a broken split
            self.tallies.variant(tag.variant).add(record.user_id, {}, new_list=False)
        failed = tag.served_by == POPULARITY
        if tag.served_by is not None and not failed:
            return
        waiting = self.pending.get(record.user_id)
        if waiting is None:
            waiting = self.pending[record.user_id] = deque()
        self.pending.move_to_end(record.user_id)
        items = () if failed else tuple(i.item_id for i in record.items)
        waiting.append(Pending(tag.variant, items, teams))
        while len(waiting) > MAX_PENDING:  # its window not over (late events judged
            waiting.popleft()  # nothing): click and conversion unknown, not 0
        while len(self.pending) > MAX_USERS:
            self.pending.popitem(last=False)
