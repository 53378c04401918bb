"""The real local stack, started once per test session (what we started is stopped after).

Every test gets fresh topic and consumer-group names, so tests never see each
other's records, and a stack left running by ``make demo`` is reused untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from infra.topics import TopicSpec, delete_topics, ensure_topics
from services.settings import Settings, load_settings
from services.stack import build_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    settings = load_settings()
    stack, started = build_stack(settings), set[str]()
    try:
        stack.up(started=started)
        yield settings
    finally:  # also after an up that failed half-way: only what this session started
        stack.down(only=started)


@pytest.fixture
def new_topic(settings: Settings) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=1)`` creates a uniquely named topic, deleted afterwards."""
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = f"test.{uuid.uuid4().hex[:12]}"
        ensure_topics(settings.kafka, [TopicSpec(name, partitions)])
        created.append(name)
        return name

    yield make
    delete_topics(settings.kafka, created)


@pytest.fixture
def group_id() -> str:
    return f"test-group.{uuid.uuid4().hex[:12]}"
