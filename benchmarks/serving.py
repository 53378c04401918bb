"""The serving bundle's cost per event, by stage (session, encode, retrieve, rank), at production
sizes with random weights: what a worker pays for the model path, without Kafka or Faust.

Steady state as in a worker: each round, every user in a micro-batch gains one event, so
the encoder steps its caches. With ``--features`` the ranker takes everything the
multi-task ranker reads (event types, context, pair features, two heads); without, the
id-only ranker of before. Written against the bundle's oldest interface too, so the same
file runs on an older commit for an old-versus-new comparison in one sitting:

    .venv/bin/python -m benchmarks.serving --features
    (cd /tmp/old && PYTHONPATH=/tmp/old /work/main/.venv/bin/python \
        /work/main/benchmarks/serving.py --features)

(without ``PYTHONPATH`` the editable install's ``model`` is imported: new code both times).

``--content`` gives the retriever a catalogue (three categories and a title per item) and,
before measuring, puts 1% more items into the bundle by content alone, which sessions
then meet like any other (issue #20: content adds at most 10% per event).

``--seen`` lets the lists hold the session's items, as a model that chose them serves
under ``STREAMREC_RECS_EXCLUDE_SEEN=auto``: the ranker then also scores the user's newest
distinct items (``RECENT_ITEMS``) beside the retriever's candidates.

``--data PATH --format F`` replays a real log instead (its newer half, in time order, at
its own session lengths and bursts; ``--batch 256`` as a worker's micro-batch); the
catalogue's size is the log's.

``--session-events N`` measures instead the events of one batch of users whose sessions
reach N events, one event per user per round, over the last 25 (where a full window rolls
once per user, in a different round for each): the cost per event at that session length
(issue #17: flat in N). Several lengths (``--session-events 10,200 --repeats 5``) run in one
process, alternated, each repeat with fresh users of the same bundle, and print the median of
each stage and the ratio of the longest to the shortest: a ratio measured in one run, where
separate processes on a noisy machine differ by more than the effect.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from model.data import IdMap
from model.pipeline import ServingBundle, limit_threads
from model.ranking.neumf import NeuMF, start_from_score
from model.retrieval.sasrec import SASRec

TYPES = ("view", "click", "add_to_cart", "purchase")
ROLL_ROUNDS = 25  # a full window of 50 rolls every 25 events: the rounds measured


def _catalogue(ids: range) -> list:
    from streams.catalog import ItemRecord

    return [ItemRecord(f"i{i}", title=f"thing {i % 97} model {i % 13}",
                       categories=(f"c{i % 20}", f"c{i % 20}.{i % 7}", f"brand{i % 50}"),
                       price=float(i % 300)) for i in ids]


def _models(items: int, users: int, features: bool, content: bool) -> tuple[SASRec, NeuMF]:
    extra: dict = {"num_types": len(TYPES) + 1} if features else {}
    table = None
    if content:
        from model.content import catalogue_table

        table = catalogue_table(_catalogue(range(items)), [f"i{i}" for i in range(items)])
        extra.update(content=table.spec.to_dict(), id_dropout=0.3)
    sasrec = SASRec(items, max_len=50, dim=64, blocks=2, dropout=0.0, **extra)
    sasrec({"seq": np.ones((1, 50), "int64"), "pos": np.ones((1, 50), "int64"),
            "neg": np.ones((1, 2), "int64"), **({"types": np.ones((1, 50), "int64")}
                                                  if features else {})})
    if table is not None:
        sasrec.encoder.set_content(table)
    kwargs: dict = {"session_dim": 64, "use_score": True}
    if features:
        from model.features import PAIR_FEATURES, FeatureSpec

        spec = FeatureSpec(event_types=TYPES, categorical=("device",), numeric=("price",))
        kwargs.update(context_dim=spec.dense_dim, categories=1, buckets=spec.buckets,
                      pair_dim=PAIR_FEATURES, tasks=("next", "conversion"),
                      features=spec.to_dict(), wide=True,
                      conditional=True)  # as ``fit_ranker`` builds it
    if table is not None:
        kwargs.update(content=table.spec.to_dict(), id_dropout=0.3)
    ranker = start_from_score(NeuMF(users, items, 32, (64, 32, 16), **kwargs))
    if table is not None:
        ranker.set_content(table)
    return sasrec, ranker


def _session(items: list[str], features: bool, now_ms: int) -> object:
    if not features:
        return items
    from model.features import LiveSession

    return LiveSession(items, [TYPES[int(item[1:]) % 4] for item in items],
                       [now_ms - 60_000 * (len(items) - i) for i in range(len(items))],
                       {"device": "app", "price": 12.5})


def _lag(user: int, session_events: int) -> int:
    """The round a user's session starts in. Past a full window (50) sessions start up to
    24 rounds apart, so each user's window rolls (every 25 events) in a different round,
    about 1 in 25 of a batch's users per round, as in live traffic, not all in one."""
    return user % 25 if session_events > 50 else 0


Batch = tuple[list[str], list]  # the users of a micro-batch and their sessions


def _synthetic(args: argparse.Namespace, catalogue: int, features: bool,
               session_events: int = 0, first_user: int = 0) -> Iterator[Batch]:
    """Random users and items; with ``session_events``, one batch of users (numbered from
    ``first_user``) whose sessions grow by one event per round."""
    rng = np.random.default_rng(first_user)
    sessions: dict[str, list[str]] = {}
    for round_ in range(session_events or args.rounds):
        batch = ([f"u{u}" for u in range(first_user, first_user + args.batch)
                  if round_ >= _lag(u - first_user, session_events)]
                 if session_events else
                 [f"u{u}" for u in rng.choice(args.users // 10, args.batch, replace=False)])
        for user in batch:
            sessions.setdefault(user, []).append(f"i{rng.integers(catalogue)}")
        yield batch, [_session(sessions[u][-50:], features, 1_700_000_000_000) for u in batch]


def _replayed(events: list, args: argparse.Namespace, features: bool) -> Iterator[Batch]:
    """A real log in time order: its older half fills the sessions, then its newer half
    arrives in micro-batches of ``--batch`` events (a user's several events in one batch
    are a burst, as in a worker), each with its own type, time and context."""
    from model.features import LiveSession

    sessions: dict[str, list] = {}
    half = len(events) // 2
    for e in events[:half]:
        sessions.setdefault(e.user_id, []).append(e)
    for at in range(half, min(len(events), half + args.rounds * args.batch), args.batch):
        users, live = [], []
        for e in events[at:at + args.batch]:
            mine = sessions.setdefault(e.user_id, [])
            mine.append(e)
            del mine[:-50]
            users.append(e.user_id)
            live.append(LiveSession(tuple(x.item_id for x in mine),
                                    tuple(x.event_type for x in mine),
                                    tuple(x.ts for x in mine), e.context)
                        if features else [x.item_id for x in mine])
        yield users, live


def _lengths(text: str) -> tuple[int, ...]:
    """``--session-events``: distinct lengths, shortest first."""
    try:
        lengths = tuple(sorted({int(n) for n in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of session lengths: {text!r}") from None
    if min(lengths) < 2:  # the first event of each session is the warm-up: 1 measures nothing
        raise argparse.ArgumentTypeError("session lengths must be at least 2")
    return lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--features", action="store_true")
    parser.add_argument("--content", action="store_true",
                        help="a catalogue, and 1%% more items known by content alone")
    parser.add_argument("--session-events", type=_lengths, default=(),
                        help="measure events 25 before to N of sessions this long; "
                             "several lengths (10,200) are measured alternately")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --session-events, how many times to measure each length")
    parser.add_argument("--seen", action="store_true",
                        help="lists may hold the session's items (a model that chose them "
                             "under STREAMREC_RECS_EXCLUDE_SEEN=auto, or false)")
    parser.add_argument("--data", type=Path, help="replay a real log's newer half instead")
    parser.add_argument("--format", dest="fmt", help="its format (streamrec replay --help)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.data is not None and args.session_events:
        parser.error("--session-events measures synthetic sessions: drop --data")
    features = args.features and "pair_dim" in inspect.signature(NeuMF).parameters
    limit_threads(1)  # as a worker does: spare BLAS/OpenMP threads only add jitter
    keras.utils.set_random_seed(0)
    if args.data is not None:
        from streams.readers import read_valid_events

        if args.fmt is None:
            raise SystemExit("--data needs --format")
        log = sorted(read_valid_events(args.data, args.fmt), key=lambda e: e.ts)
        user_ids = sorted({e.user_id for e in log})
        item_ids = sorted({e.item_id for e in log})
    else:
        user_ids = [f"u{i}" for i in range(args.users)]
        item_ids = [f"i{i}" for i in range(args.items)]
    sasrec, ranker = _models(len(item_ids), len(user_ids), features, args.content)
    bundle = ServingBundle.from_models(sasrec, ranker, IdMap.from_list(user_ids),
                                       IdMap.from_list(item_ids), "bench")
    catalogue = len(item_ids)
    if args.content:
        catalogue += bundle.add_items(_catalogue(range(catalogue, catalogue * 101 // 100)))
    header = (f"features={'on' if features else 'off'}, content={'on' if args.content else 'off'}"
              f", seen items {'listed' if args.seen else 'left out'}"
              + (f", {args.data}" if args.data is not None else ""))
    if not args.session_events:
        batches = (_replayed(log, args, features) if args.data is not None
                   else _synthetic(args, catalogue, features))
        per_event, events = _measure(bundle, batches, args.rounds // 3, not args.seen)
        print(f"{header}; µs per event over {events} events, batches of {args.batch}:")
        _print_stages({stage: [value] for stage, value in per_event.items()})
        return
    _by_session_length(args, bundle, catalogue, features, header)


def _measure(bundle: ServingBundle, batches: Iterator[Batch], measured_from: int,
             exclude_seen: bool = True) -> tuple[dict[str, float], int]:
    """µs per event by stage over the batches from ``measured_from`` on (the earlier ones
    warm up), and the events measured."""
    timings: dict[str, float] = {}
    events = 0
    for round_, (batch, live) in enumerate(batches):
        into = timings if round_ >= measured_from else None
        start = time.perf_counter()
        bundle.recommend(batch, live, 10, exclude_seen=exclude_seen, timings=into)
        if into is not None:
            events += len(batch)
            timings["total"] = timings.get("total", 0.0) + time.perf_counter() - start
    return {stage: seconds / events * 1e6 for stage, seconds in timings.items()}, events


def _by_session_length(args: argparse.Namespace, bundle: ServingBundle, catalogue: int,
                       features: bool, header: str) -> None:
    """Each session length in turn, ``--repeats`` times, fresh users each time, the order
    reversed every other repeat; the medians, and the longest against the shortest with the
    ratio of every repeat."""
    lengths = list(args.session_events)
    if (len(lengths) * args.repeats + 1) * args.batch > args.users:
        raise SystemExit("--users is too small for this many lengths, repeats and --batch")
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in lengths}
    first_user = args.batch  # users 0.. warm the bundle up first
    _measure(bundle, _synthetic(args, catalogue, features, lengths[0]), lengths[0],
             not args.seen)
    for repeat in range(args.repeats):
        for n in lengths[::-1] if repeat % 2 else lengths:
            batches = _synthetic(args, catalogue, features, n, first_user)
            # the last 25 rounds (0-based n - 25 .. n - 1), where each user's window rolls
            # once; round 0 (every session's first event) is never measured
            runs[n].append(_measure(bundle, batches, max(1, n - ROLL_ROUNDS), not args.seen)[0])
            first_user += args.batch
    for n in lengths:
        print(f"{header}; sessions of {n} events, µs per event, median of {args.repeats}, "
              f"batches of {args.batch}:")
        _print_stages({stage: [run[stage] for run in runs[n]] for stage in runs[n][0]})
    if len(lengths) > 1:
        short, long = lengths[0], lengths[-1]
        for stage in ("encode", "total"):
            ratios = [b[stage] / a[stage] for a, b in zip(runs[short], runs[long], strict=True)]
            print(f"{stage} at {long} against {short} events: "
                  f"{statistics.median(ratios):.2f}x (each repeat: "
                  + ", ".join(f"{r:.2f}" for r in ratios) + ")")


def _print_stages(values: dict[str, list[float]]) -> None:
    for stage, runs in values.items():
        print(f"  {stage:<9} {statistics.median(runs):8.1f}")


if __name__ == "__main__":
    main()
