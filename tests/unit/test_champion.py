"""Promoting by hand (``experiment conclude --promote``, the API) takes the trainer's lock
and never leaves a retriever of one version beside a ranker of another."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from services import champion
from services.champion import Held
from streams.experiment_control import ExperimentConflict

OLD = {"streamrec-retriever": "1", "streamrec-ranker": "1"}
NEW = {"streamrec-retriever": "2", "streamrec-ranker": "2"}


class Registry:
    """The champion alias per name; setting the ranker's fails while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.alias, self.down = dict(OLD), down

    def set(self, _: object, versions: dict[str, str]) -> None:
        for name, version in versions.items():
            if self.down and name == "streamrec-ranker" and version != OLD[name]:
                raise OSError("registry: 503 Service Unavailable")
            self.alias[name] = version


def _patched(monkeypatch: pytest.MonkeyPatch, registry: Registry, held: bool) -> list[dict]:
    announced: list[dict] = []
    lock = Held(held, SimpleNamespace(owned=lambda: held))
    monkeypatch.setattr(champion, "promotion_lock", lambda url: nullcontext(lock))
    monkeypatch.setattr(champion, "mlflow_store", lambda settings: None)
    monkeypatch.setattr(champion, "retry", lambda what, call: call())
    monkeypatch.setattr("streams.registry.set_champion", registry.set)
    monkeypatch.setattr("streams.registry.alias_versions",
                        lambda store, names: {n: registry.alias[n] for n in names})
    monkeypatch.setattr("streams.hot_swap.announce",
                        lambda kafka, topic, versions, uri: announced.append(versions) or True)
    return announced


SETTINGS = SimpleNamespace(redis="redis://x", kafka=None, topic_model_updates="t",
                           mlflow_uri="sqlite:///x")


def test_a_promotion_by_hand_waits_its_turn_behind_the_trainers_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Moved with no lock, a conclusion could interleave with a trainer's promotion (a
    review)."""
    registry = Registry()
    announced = _patched(monkeypatch, registry, held=False)
    with pytest.raises(ExperimentConflict, match="another promotion holds the lock"):
        champion.promote(SETTINGS, NEW)  # type: ignore[arg-type]
    assert registry.alias == OLD and announced == []


def test_a_move_that_fails_part_way_is_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retriever's alias had moved when the ranker's failed: every restart then loaded
    a pair of different versions (a review)."""
    registry = Registry(down=True)
    announced = _patched(monkeypatch, registry, held=True)
    with pytest.raises(OSError, match="503"):
        champion.promote(SETTINGS, NEW)  # type: ignore[arg-type]
    assert registry.alias == OLD and announced == []
    registry.down = False
    assert champion.promote(SETTINGS, NEW) is True  # type: ignore[arg-type]
    assert registry.alias == NEW and announced == [NEW]
