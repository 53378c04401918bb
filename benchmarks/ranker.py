"""Does the ranker earn its place? SASRec alone against the retrieve-then-rerank pipeline
with the multi-task ranker, and the pipeline without each of its new inputs, all on one
leave-last-out split of one log (issue #14's ablation):

- ``sasrec``: the retriever alone (with event types);
- ``pipeline``: SASRec + the multi-task ranker with context, event types, both heads;
- ``no-context``: the ranker without the newest event's context features;
- ``no-types``: SASRec trained without the event-type embedding and type weights, and
  its own ranker;
- ``no-conversion``: the ranker with the next-item head only;
- ``no-session``: the ranker without the session embedding as an input (its training
  lists carry the cross-fitted retrievers' embeddings, served ones the served
  retriever's: another basis).

Full-ranking figures are the ones to quote; sampled ones are printed for the papers'
protocol. Full NDCG@10 is also split by test target (``repeat``: an item the user had
met; ``new``), and given with the history kept among the candidates (``kept``), since the
full protocol masks every seen item but the target. A pipeline also gives it with the
history left out of its candidates, as a live list with ``STREAMREC_RECS_EXCLUDE_SEEN=true``
has it (a repeated target cannot be listed), beside the ranker's choice between the two.
Conversion figures are on the test cases whose target converted, per head.

    .venv/bin/python -m benchmarks.ranker --data ../shared/data/rees46-slice/events.csv \\
        --format rees46 --numeric price
    .venv/bin/python -m benchmarks.ranker --data ../shared/data/ml-latest-small/ratings.csv \\
        --format movielens --numeric rating --liked-key rating \\
        --items ../shared/data/ml-latest-small/movies.csv --items-format movielens
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import keras
import numpy as np

from model.data import LeaveLastOut, build_sequences, leave_last_out
from model.evaluation.harness import conversion_report
from model.evaluation.protocols import evaluate, rank_cases
from model.features import FeatureSpec
from model.pipeline import PipelineScorer
from model.ranking.training import NeuMFConfig, fit_ranker
from model.retrieval.index import ItemIndex
from model.retrieval.training import SASRecConfig, SASRecScorer, fit_sasrec
from streams.catalog_files import read_catalog
from streams.events import EVENT_TYPES
from streams.readers import read_valid_events

VARIANTS = ("pipeline", "no-context", "no-types", "no-conversion", "no-session")


def _figures(scorer: object, split: LeaveLastOut) -> dict:
    """Both protocols, and full NDCG@10 two more ways: on the test targets the user had
    met before (``repeat``) and the rest (``new``), and with the history kept among the
    candidates (``keep_history``: what a repeated target must also beat)."""
    users = split.eval_users("test")
    histories = [split.history(u, "test") for u in users]
    targets = np.array([split.target(u, "test") for u in users])
    cases = (users, histories, targets, split.sequences.num_items)
    side = split.side(users, "test")
    ranks = rank_cases(scorer, *cases, side=side)  # type: ignore[arg-type]
    result = ranks.report()
    repeat = np.array([t in h for h, t in zip(histories, targets)])
    out = {"full": result["full"], "sampled": result["sampled"], "repeat_share":
           float(repeat.mean())}
    for name, rows in (("repeat", repeat), ("new", ~repeat)):
        if rows.any():
            out[f"full {name}"] = ranks.rows(rows).report()["full"]
    out["full keep_history"] = rank_cases(scorer, *cases, side=side,  # type: ignore[arg-type]
                                          keep_history=True).report()["full"]
    return out


def _retriever(split: LeaveLastOut, cfg: SASRecConfig) -> tuple:
    """SASRec trained once per type setting, its scorer, index and figures."""
    start = time.perf_counter()
    res = fit_sasrec(split, cfg)
    scorer = SASRecScorer(res.model)
    index = ItemIndex.build(keras.ops.convert_to_numpy(res.model.item_embeddings()))
    figures = {**_figures(scorer, split), "best_epoch": res.best_epoch,
               "seconds": round(time.perf_counter() - start, 1)}
    return res, scorer, index, figures


def _ranker(split: LeaveLastOut, retriever: tuple, sasrec_cfg: SASRecConfig,
            cfg: NeuMFConfig) -> dict:
    """The pipeline with a ranker trained by ``cfg`` on top of ``retriever``."""
    res, scorer, index, _ = retriever
    start = time.perf_counter()
    ranker = fit_ranker(split, scorer, index, sasrec_cfg, res.best_epoch, cfg)
    pipeline = PipelineScorer(scorer, index, ranker.model, cfg.candidates, exclude_seen=False,
                              head_weights=cfg.head_weights)
    return {**_figures(pipeline, split), "best_epoch": ranker.best_epoch, "curve": ranker.curve,
            "retrieval_order": ranker.model.retrieval_order,
            "recommends_seen": ranker.model.recommends_seen,
            "full without seen": evaluate(pipeline.excluding_seen(True), split)["full"],
            "conversion": conversion_report(pipeline, split),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--format", required=True)
    parser.add_argument("--numeric", default="", help="numeric context keys, comma-separated")
    parser.add_argument("--categorical", default="", help="categorical context keys")
    parser.add_argument("--liked-key", default=None, help="numeric key marking a conversion")
    parser.add_argument("--items", default=None, help="item catalogue: content for both models")
    parser.add_argument("--items-format", default=None, help="the catalogue's format")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=42, help="both models' training seed")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    keys = lambda text: tuple(k for k in text.split(",") if k)  # noqa: E731
    spec = FeatureSpec(event_types=EVENT_TYPES, numeric=keys(args.numeric),
                       categorical=keys(args.categorical), liked_key=args.liked_key)
    records = list(read_catalog(args.items, args.items_format)) if args.items else []
    split = leave_last_out(build_sequences(read_valid_events(args.data, args.format),
                                           spec=spec, catalogue=records))
    seqs = split.sequences
    test_users = split.eval_users("test")
    print(f"{args.data}: {seqs.num_users:,} users, {seqs.num_items:,} items, "
          f"{seqs.interactions():,} events, {len(test_users):,} test users, "
          f"{int(split.converted(test_users, 'test').sum())} converted targets")
    sasrec_cfg, neumf_cfg = SASRecConfig(seed=args.seed), NeuMFConfig(seed=args.seed)
    untyped = replace(sasrec_cfg, event_types=False, type_weights=())
    variants = [v for v in args.variants.split(",") if v]
    report: dict[str, dict] = {}
    retrievers = {}
    for variant in variants:
        typed = variant != "no-types"
        if typed not in retrievers:
            retrievers[typed] = _retriever(split, sasrec_cfg if typed else untyped)
            report["sasrec" if typed else "sasrec (no types)"] = retrievers[typed][3]
        cfg = {"no-context": replace(neumf_cfg, context=False),
               "no-conversion": replace(neumf_cfg, tasks=("next",)),
               "no-session": replace(neumf_cfg, session=False)}.get(variant, neumf_cfg)
        report[variant] = _ranker(split, retrievers[typed],
                                  sasrec_cfg if typed else untyped, cfg)
        _print(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


def _print(report: dict[str, dict]) -> None:
    base = report.get("sasrec", {}).get("full", {}).get("NDCG@10")
    print(f"\n{'model':<20} {'full NDCG@10':>13} {'vs sasrec':>10} {'full HR@10':>11} "
          f"{'MRR':>7} {'sampled NDCG@10':>16} {'repeat':>7} {'new':>7} {'kept':>7} "
          f"{'best ep':>8}")
    for name, r in report.items():
        ndcg = r["full"]["NDCG@10"]
        ratio = f"{ndcg / base:.3f}x" if base else "-"
        parts = [r.get(f"full {p}", {}).get("NDCG@10", float("nan"))
                 for p in ("repeat", "new", "keep_history")]
        print(f"{name:<20} {ndcg:>13.4f} {ratio:>10} {r['full']['HR@10']:>11.4f} "
              f"{r['full']['MRR']:>7.4f} {r['sampled']['NDCG@10']:>16.4f} "
              + " ".join(f"{p:>7.4f}" for p in parts) + f" {str(r.get('best_epoch')):>8}")
        if "retrieval_order" in r:
            print(f"    among unseen items: the {'retriever' if r['retrieval_order'] else 'ranker'}"
                  "'s order (chosen on validation)")
        if "recommends_seen" in r:
            print(f"    live lists {'hold' if r['recommends_seen'] else 'leave out'} the session's "
                  f"items (chosen on validation); full NDCG@10 with them (kept) "
                  f"{r['full keep_history']['NDCG@10']:.4f}, without "
                  f"{r['full without seen']['NDCG@10']:.4f}")
        for head, c in (r.get("conversion") or {}).items():
            gain = (f"  vs next {c['converts AUC gain']:+.4f} [{c['converts AUC gain low']:+.4f}, "
                    f"{c['converts AUC gain high']:+.4f}]" if "converts AUC gain" in c else "")
            print(f"    conversion targets ({c['cases']}), {head:<16} AUC {c['AUC']:.4f}  "
                  f"NDCG@10 {c['NDCG@10']:.4f}  converts AUC {c['converts AUC']:.4f}{gain}")


if __name__ == "__main__":
    main()
