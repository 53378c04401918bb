"""What the encoder's rolling window costs in quality (issue #17's long sessions).

Training and the offline protocol read a session's last ``max_len`` (50) items. Serving
does too until the session passes 50 events; from then on the encoder's cache rolls to
its newest half and grows back (``IncrementalEncoder._roll``), so it encodes the newest
26 to 50 items, cycling every 25 events, in exchange for one 25-item rebuild per 25 events
instead of a 49-item one per event. This measures the price: SASRec trained on a
leave-last-out split, then each test user's embedding from the window serving would hold
("keep 25", today's roll) or would hold with a roll keeping more, against the last 50
(``keep 49``: no roll), each ranked against every unseen item. A cache's answer equals a
fresh encode of the items it holds (``tests/unit/test_pipeline.py``), so each window is
encoded afresh by a retriever-only ``ServingBundle``.

    .venv/bin/python -m benchmarks.window --data ../shared/data/ml-latest-small/ratings.csv \\
        --format movielens --seeds 42 1 2 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from model.data import LeaveLastOut, build_sequences, leave_last_out
from model.evaluation.metrics import rank_of_target
from model.features import LiveSession
from model.pipeline import ServingBundle
from model.retrieval.training import SASRecConfig, fit_sasrec
from streams.readers import read_valid_events

KEEPS = (25, 37, 45, 49)  # 25: today's roll (half a window); 49: the last 50, as trained


def served_window(events: int, keep: int, max_len: int) -> int:
    """How many of a session's newest items a cache that rolls to ``keep`` holds after
    ``events`` events (all of them until the window first fills)."""
    return events if events <= max_len else keep + 1 + (events - max_len - 1) % (max_len - keep)


def ndcg(ranks: np.ndarray) -> np.ndarray:
    """NDCG@10 of each case from its target's 0-based rank (``metrics.ndcg``'s terms, per
    case: the rolls are compared case by case)."""
    return np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0)


def ranks_by_window(split: LeaveLastOut, bundle: ServingBundle, keeps: tuple[int, ...]
                    ) -> dict[int, np.ndarray]:
    """Each test target's rank among the unseen items, per roll, as the offline protocol
    ranks it (``rank_of_target``: ties in a random order, a NaN target last, a target the
    user met before still a candidate)."""
    names, items, max_len = split.sequences.items.ids, bundle.encoder.items, bundle.encoder.max_len
    ranks: dict[int, list[int]] = {k: [] for k in keeps}
    for user in split.eval_users("test"):
        hist = split.history(int(user), "test")
        target = split.target(int(user), "test")
        session = [names[i - 1] for i in hist]
        for keep in keeps:
            bundle.caches.clear()
            bundle.recommend(["u"], [LiveSession(session[-served_window(len(session), keep,
                                                                       max_len):])], 1)
            scores = items[1:] @ bundle.caches["u"].output
            ignore = np.zeros(len(scores), bool)
            ignore[hist - 1] = ignore[target - 1] = True  # the target: scored on its own
            ranks[keep].append(int(rank_of_target(scores[[target - 1]], scores[None],
                                                  ignore[None])[0]))
    return {k: np.array(r) for k, r in ranks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--format", dest="fmt", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    split = leave_last_out(build_sequences(read_valid_events(args.data, args.fmt)))
    users = split.eval_users("test")
    longer = np.mean([len(split.history(int(u), "test")) > 50 for u in users])
    print(f"{args.data.name}: {len(users):,} test users, {longer:.0%} past 50 events")
    for seed in args.seeds:
        res = fit_sasrec(split, SASRecConfig(epochs=args.epochs, seed=seed))
        bundle = ServingBundle.from_models(res.model, None, split.sequences.users,
                                           split.sequences.items, "window")
        ranks = ranks_by_window(split, bundle, KEEPS)
        last50 = ndcg(ranks[KEEPS[-1]])
        draws = np.random.default_rng(0).choice(len(last50), (2000, len(last50)))
        print(f"seed {seed} (best epoch {res.best_epoch}): full NDCG@10, HR@10; against the "
              "last 50 (paired bootstrap 95%)")
        for keep in KEEPS:
            gain = ndcg(ranks[keep]) - last50
            low, high = np.percentile(gain[draws].mean(1), [2.5, 97.5]) / last50.mean()
            print(f"  keep {keep}: {ndcg(ranks[keep]).mean():.4f}, "
                  f"{(ranks[keep] < 10).mean():.4f}; {gain.mean() / last50.mean():+.1%} "
                  f"[{low:+.1%}, {high:+.1%}]")


if __name__ == "__main__":
    main()
