"""Bucketing: uniform, the same in every process, independent across salts, and strict
about the shares it is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from model.experiments.bucketing import assign, bucket

ROOT = Path(__file__).resolve().parents[2]
IDS = [f"user-{i}" for i in range(100_000)]


def test_buckets_are_uniform_over_100k_ids() -> None:
    values = np.array([bucket(u, "exp-1") for u in IDS])
    assert values.min() >= 0.0 and values.max() < 1.0
    counts = np.bincount((values * 100).astype(int), minlength=100)
    assert chisquare(counts).pvalue > 0.001
    assert abs(values.mean() - 0.5) < 4 * np.sqrt(1 / 12 / len(IDS))


def test_the_same_user_gets_the_same_bucket_in_another_process() -> None:
    """Python's hash() would differ under another PYTHONHASHSEED; a restart is a new process."""
    users = IDS[:50]
    code = ("import sys; from model.experiments.bucketing import bucket; "
            "print(repr([bucket(u, 'exp-1') for u in sys.argv[1:]]))")
    out = subprocess.run([sys.executable, "-c", code, *users], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONHASHSEED": "12345"}).stdout
    assert eval(out) == [bucket(u, "exp-1") for u in users]


def test_a_fixed_id_keeps_its_bucket_across_releases() -> None:
    """Changing the hash would silently move every user of a running experiment."""
    assert bucket("42", "homepage-2024") == pytest.approx(0.13325082209198003, abs=1e-15)


def test_buckets_under_two_salts_are_independent() -> None:
    a = np.array([bucket(u, "exp-1") for u in IDS[:20_000]])
    b = np.array([bucket(u, "exp-2") for u in IDS[:20_000]])
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    table = np.histogram2d(a, b, bins=4)[0]  # the 4x4 quartile table: no structure
    assert chi2_contingency(table).pvalue > 0.001
    assert 0.48 < np.mean((a < 0.5) == (b < 0.5)) < 0.52  # 50/50 splits agree by chance only


def test_salt_and_user_cannot_trade_characters() -> None:
    assert bucket("c", "ab") != bucket("bc", "a")


def test_assign_follows_the_shares() -> None:
    shares = [0.2, 0.3, 0.5]
    variants = np.array([assign(u, "exp-3", shares) for u in IDS])
    counts = np.bincount(variants, minlength=3)
    assert chisquare(counts, np.array(shares) * len(IDS)).pvalue > 0.001


def test_assign_is_the_interval_holding_the_bucket() -> None:
    shares = [0.25, 0.25, 0.5]
    for user in IDS[:2000]:
        b = bucket(user, "exp-4")
        assert assign(user, "exp-4", shares) == (0 if b < 0.25 else 1 if b < 0.5 else 2)


def test_shares_a_hair_below_one_still_cover_every_bucket() -> None:
    shares = [1 / 3, 1 / 3, 1 / 3 - 1e-12]
    assert {assign(u, "exp-5", shares) for u in IDS[:3000]} == {0, 1, 2}
    assert assign("anyone", "x", [1.0]) == 0


@pytest.mark.parametrize("shares", [[0.5, 0.4], [0.6, 0.6], [1.2, -0.2], [0.0, 1.0], [],
                                    [float("nan"), 1.0], [0.5, 0.5 + 1e-4]])
def test_bad_shares_are_refused_with_one_line(shares: list[float]) -> None:
    with pytest.raises(ValueError) as error:
        assign("user", "salt", shares)
    assert "\n" not in str(error.value) and "shares" in str(error.value)
