"""What a Python-literal line costs to read against the same line as JSON.

Steam's reviews and Amazon 2014's metadata are written by Python's ``repr``; the ``json``
formats read them through ``ast.literal_eval`` (``streams.files.json_object``) after
JSON has refused them. This writes the same generated rows both ways, Steam-shaped
reviews for the ``json`` event format and Amazon-2014-shaped records (a ``related``
list of 40 ids, category paths) for the ``json`` catalogue, and reads each file
alternately, JSON first:

    .venv/bin/python -m benchmarks.readers
    .venv/bin/python -m benchmarks.readers --rows 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.catalog_files import scan_catalog
from streams.readers import read_valid_events


def _review(rng: random.Random) -> dict[str, Any]:
    return {"username": f"user{rng.randrange(5000)}", "hours": 12.5, "products": 300,
            "product_id": str(rng.randrange(20000)), "page_order": 3,
            "date": f"2017-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "text": "A fine game. " * 30, "early_access": False, "page": 1}


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    return {"asin": f"B{i:09d}", "title": "Girls Ballet Tutu Neon Pink", "price": 3.17,
            "related": {"also_bought": [f"B{rng.randrange(10**9):09d}" for _ in range(40)]},
            "salesRank": {"Toys & Games": 211836},
            "categories": [["Clothing, Shoes & Jewelry", "Girls"],
                           ["Clothing, Shoes & Jewelry", "Costumes & Accessories"]],
            "description": "A tutu for dancing. " * 10}


def _time(read: Callable[[Path], int], path: Path) -> float:
    start = time.perf_counter()
    read(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternated reads of each file")
    args = parser.parse_args()
    rng = random.Random(0)
    cases: dict[str, tuple[list[dict[str, Any]], Callable[[Path], int]]] = {
        "reviews (json events)": ([_review(rng) for _ in range(args.rows)],
                                  lambda p: len(read_valid_events(p, "json"))),
        "metadata (json catalogue)": ([_record(rng, i) for i in range(args.rows)],
                                      lambda p: sum(1 for _ in scan_catalog(p, "json")))}
    with tempfile.TemporaryDirectory() as folder:
        for name, (rows, read) in cases.items():
            as_json, as_literal = Path(folder, "a.json"), Path(folder, "b.json")
            as_json.write_text("".join(json.dumps(row) + "\n" for row in rows))
            as_literal.write_text("".join(repr(row) + "\n" for row in rows))
            times: dict[Path, list[float]] = {as_json: [], as_literal: []}
            for _ in range(args.rounds):
                for path in times:
                    times[path].append(_time(read, path))
            fast_json, fast_literal = min(times[as_json]), min(times[as_literal])
            print(f"{name}: {args.rows:,} rows; JSON {fast_json / args.rows * 1e6:.0f} µs a "
                  f"line, literal {fast_literal / args.rows * 1e6:.0f} µs a line; literal / "
                  f"JSON {fast_literal / fast_json:.1f}x (fastest of {args.rounds} each)")


if __name__ == "__main__":
    main()
