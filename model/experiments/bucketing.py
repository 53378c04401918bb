"""Deterministic assignment of users to experiment variants.

A user's variant must be the same in every worker and after every restart, so it comes
from a cryptographic hash of (salt, user id), never from Python's ``hash()`` (randomised
per process) or from a random generator's state. The salt is per experiment: a user's
variant in one experiment says nothing of their variant in another.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from itertools import accumulate

# shares typed as rounded decimals, to five places or more (thirds as 0.33333), add up to 1
SHARE_TOLERANCE = 1.5e-5
_FLOAT_BITS = 53  # a double's mantissa: every value k / 2**53 is exact


def stable_hash(text: str) -> int:
    """A 64-bit integer from ``text``, identical on every machine and in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def bucket(user_id: str, salt: str) -> float:
    """A uniform value in [0, 1) for ``user_id`` under ``salt``. The salt is length-prefixed
    so that no (salt, user) pair can collide with another by shifting characters between
    the two ("ab" + "c" vs "a" + "bc")."""
    value = stable_hash(f"{len(salt)}:{salt}{user_id}") >> (64 - _FLOAT_BITS)
    return value / 2.0 ** _FLOAT_BITS


def check_shares(shares: Sequence[float]) -> None:
    """Raise ValueError (one line) unless ``shares`` are positive and sum to 1."""
    if not shares:
        raise ValueError("shares must name at least one variant")
    if not all(math.isfinite(s) and s > 0 for s in shares):
        raise ValueError(f"shares must all be positive. Received: {list(shares)}")
    if abs(math.fsum(shares) - 1.0) > SHARE_TOLERANCE:
        raise ValueError(f"shares must sum to 1 (got {math.fsum(shares)!r}). "
                         f"Received: {list(shares)}")


def assign(user_id: str, salt: str, shares: Sequence[float]) -> int:
    """The index of the variant whose interval of cumulative shares holds the user's bucket.
    Only the inner boundaries are searched, so a sum of shares a hair below 1 can never
    leave a bucket without a variant."""
    check_shares(shares)
    boundaries = list(accumulate(shares))[:-1]
    return bisect.bisect_right(boundaries, bucket(user_id, salt))
