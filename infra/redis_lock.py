"""redis-py's lock, taken and released the way the trainer's promotion and the
experiments' starts need it: a try whose reply was lost does not strand the lock, and a
release that fails does not hide what was done under it."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)


def new_token() -> bytes:
    """The value one holder's tries all write: see ``take``."""
    return uuid.uuid4().hex.encode()


def take(client: Any, lock: Any, token: bytes) -> bool:
    """One try at ``lock`` (``client.lock(...)``) with ``token``; true as well when the
    lock already holds ``token``: a try whose ``SET`` took it but whose reply was lost
    (redis-py retries a timed-out command). With a new token each, that try found its own
    lock held by "another" and waited it out."""
    if lock.acquire(blocking=False, token=token):
        return True
    if client.get(lock.name) != token:
        return False
    lock.local.token = token  # what a successful acquire records, to release it by
    return True


def release(lock: Any, ttl_s: float, what: str) -> None:
    """Release ``lock``, named ``what`` in the log; one that expired first, or a Redis
    that does not answer, is logged, not raised: what its holder did stands."""
    try:
        lock.release()
    except LockError:
        log.warning("%s expired (after %g s) before it was released", what, ttl_s)
    except RedisError as exc:
        log.warning("%s was not released (%s); it expires in %g s", what, exc, ttl_s)


def owned(lock: Any) -> bool:
    """Whether ``lock`` is still this holder's (it expires); a Redis that cannot say: not
    known to be ours, so nothing is done under it."""
    try:
        return bool(lock.owned())
    except RedisError:
        return False
