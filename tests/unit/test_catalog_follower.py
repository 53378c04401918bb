"""The worker's catalogue (``streams.catalog_follower.Catalogue``): what it keeps of the
items topic, what it hands the serving bundle, and that a swapped-in model gets it all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import orjson
import pytest

from model.pipeline import Recommendation
from streams.catalog import ItemRecord
from streams.catalog_follower import Catalogue, off_loop
from streams.hot_swap import Serving
from streams.messages import CHAMPION, ModelAnnouncement
from streams.metrics import WorkerMetrics


def message(key: str, value: dict | bytes | None) -> SimpleNamespace:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return SimpleNamespace(key=key.encode(), value=raw)


class ContentBundle:
    """Takes items when ``reads_content``; answers every user with one fixed list."""

    def __init__(self, version: str, reads_content: bool = True) -> None:
        self.version, self.reads_content = version, reads_content
        self.users, self.items = SimpleNamespace(ids=["u1"]), SimpleNamespace(ids=["i1"])
        self.added: list[list[str]] = []

    def add_items(self, records: Sequence[ItemRecord]) -> int:
        self.added.append([r.item_id for r in records])
        return len(records) if self.reads_content else 0

    def recommend(self, users, sessions, k=10, exclude_seen=True, timings=None):  # noqa: ANN001, ANN201
        return [Recommendation(["i1"], [1.0])] * len(users)


def count(metrics: WorkerMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("streamrec_worker_catalogue_records_total",
                                             {"outcome": outcome}) or 0.0


def test_the_newest_valid_record_per_item_is_kept_and_embedded() -> None:
    metrics = WorkerMetrics()
    catalogue = Catalogue(metrics)
    fresh = catalogue.take([message("a", {"item_id": "a", "title": "old"}),
                            message("b", b"{not json"),
                            message("a", {"item_id": "a", "title": "new"}),
                            message("c", {"item_id": "c", "categories": ["x"]}),
                            message("c", None)])  # a tombstone forgets c
    assert [r.item_id for r in fresh] == ["a"] and fresh[0].title == "new"
    assert set(catalogue.records) == {"a"} and count(metrics, "invalid") == 1
    # Keyed as another item, a record would outlive its item's tombstone in compaction.
    assert catalogue.take([message("d", {"item_id": "e"})]) == []
    assert "e" not in catalogue.records and count(metrics, "wrong_key") == 1
    bundle = ContentBundle("r:v1")
    catalogue.embed(bundle, fresh)
    catalogue.embed(bundle, [])  # nothing to hand over: the bundle is not called
    assert bundle.added == [["a"]] and count(metrics, "embedded") == 1
    catalogue.embed(ContentBundle("r:v0", reads_content=False), fresh)
    assert count(metrics, "skipped") == 1


def test_a_swapped_in_model_gets_the_whole_catalogue_before_it_serves() -> None:
    metrics = WorkerMetrics()
    catalogue = Catalogue(metrics, caught_up=True)
    catalogue.take([message(i, {"item_id": i}) for i in ("a", "b")])
    serving = Serving(ContentBundle("r:v1"), metrics, catalogue=catalogue)
    fresh = ContentBundle("r:v2")
    note = ModelAnnouncement(CHAMPION, {"r": "2"}, "file:///m").to_json()
    assert asyncio.run(serving.apply(note, lambda: fresh, 10))
    assert serving.bundle is fresh and fresh.added == [["a", "b"]]


def test_a_loading_bundle_takes_the_catalogue_off_the_loop_and_what_came_meanwhile_on_it(
) -> None:
    """Embedding a large catalogue takes seconds: on the event loop it held up every
    event (a worker's swap) and request (the API's load). The records read before the
    load go with it to its thread; those read while it ran, changed ones included, on the
    loop; a tombstone read meanwhile leaves the item taken, as in every served bundle."""
    import threading

    catalogue = Catalogue(WorkerMetrics(), caught_up=True)
    catalogue.take([message(i, {"item_id": i}) for i in ("a", "b", "c")])
    threads: dict[str, int] = {}

    class Recording(ContentBundle):
        def add_items(self, records: Sequence[ItemRecord]) -> int:
            threads[",".join(r.item_id for r in records)] = threading.get_ident()
            return super().add_items(records)

    fresh = Recording("r:v2")

    def load() -> ContentBundle:  # the follower reads on while the bundle loads
        catalogue.take([message("b", {"item_id": "b", "title": "B"}), message("d", {
            "item_id": "d"}), message("c", None)])
        return fresh

    async def scenario() -> ContentBundle:
        loaded = await catalogue.load(load)
        return loaded if threading.get_ident() == threads["b,d"] else None

    assert asyncio.run(scenario()) is fresh
    assert fresh.added == [["a", "b", "c"], ["b", "d"]]
    assert threads["a,b,c"] != threads["b,d"]  # the snapshot on the loading thread
    waiting = Catalogue(WorkerMetrics())  # not caught up: it waits for the hand-over
    waiting.take([message("a", {"item_id": "a"})])
    late = asyncio.run(waiting.load(lambda: ContentBundle("r:v3")))
    assert late.added == []
    waiting.hand_over([])
    assert late.added == [["a"]]


def test_a_model_that_fails_to_take_the_catalogue_is_refused_and_the_old_one_serves_on(
) -> None:
    class Broken(ContentBundle):
        def add_items(self, records: Sequence[ItemRecord]) -> int:
            raise ValueError("content encoder shape mismatch")

    metrics, old = WorkerMetrics(), ContentBundle("r:v1")
    catalogue = Catalogue(metrics, caught_up=True)
    catalogue.take([message("a", {"item_id": "a"})])
    serving = Serving(old, metrics, catalogue=catalogue)
    note = ModelAnnouncement(CHAMPION, {"r": "2"}, "file:///m").to_json()
    assert not asyncio.run(serving.apply(note, lambda: Broken("r:v2"), 10))
    assert serving.bundle is old and metrics.registry.get_sample_value(
        "streamrec_worker_model_swaps_total", {"outcome": "failed"}) == 1.0


def test_an_experiments_variant_gets_the_catalogue_when_it_loads() -> None:
    from streams.experiment import Experiment, Variant
    from streams.experiment_follower import ExperimentSlot

    catalogue = Catalogue(WorkerMetrics(), caught_up=True)
    catalogue.take([message(i, {"item_id": i}) for i in ("a", "b")])
    challenger = ContentBundle("chal:v2")
    slot = ExperimentSlot(lambda ref: challenger, WorkerMetrics(), catalogue=catalogue)
    slot.declare(Experiment(name="e", salt="s", started_us=1, variants=[
        Variant(name="control", model="champion", share=0.5),
        Variant(name="treatment", model="challenger", share=0.5)]))
    asyncio.run(slot.load_missing())
    assert slot.bundles() == [challenger] and challenger.added == [["a", "b"]]


def test_a_bundle_that_cannot_take_a_poll_of_records_does_not_stop_the_others() -> None:
    from streams.catalog_follower import embed_or_log

    class Broken(ContentBundle):
        def add_items(self, records: Sequence[ItemRecord]) -> int:
            raise ValueError("content encoder shape mismatch")

    metrics = WorkerMetrics()
    catalogue = Catalogue(metrics, caught_up=True)
    records = catalogue.take([message("a", {"item_id": "a"})])
    champion = ContentBundle("r:v1")
    for bundle in (Broken("chal:v2"), champion):  # as follow_catalogue hands each poll on
        embed_or_log(catalogue, bundle, records)
    assert champion.added == [["a"]] and count(metrics, "failed") == 1


class TwoPolls:
    """A consumer of one partition whose topic holds item x, item y, then x's tombstone,
    read in two polls; ``between`` runs before the second."""

    def __init__(self, between: Callable[[], None] = lambda: None) -> None:
        from aiokafka import TopicPartition

        self.tp, self.between, self.read = TopicPartition("items", 0), between, 0
        self.polls = [[message("x", {"item_id": "x", "title": "X"}),
                       message("y", {"item_id": "y", "title": "Y"})], [message("x", None)]]

    async def end_offsets(self, tps: list) -> dict:
        return {self.tp: 3}

    async def position(self, _: object) -> int:
        return self.read

    async def getmany(self, *_: object, **__: object) -> dict:
        if self.read:
            self.between()
        batch = self.polls.pop(0)
        self.read += len(batch)
        return {self.tp: batch}


def test_a_starting_follower_reads_to_the_end_before_it_embeds() -> None:
    """Kafka leaves the active segment uncompacted: an item and its tombstone, read in two
    polls, put the deleted item back into every bundle at every start."""
    from streams.catalog_follower import catch_up

    consumer, catalogue = TwoPolls(), Catalogue(WorkerMetrics())
    asyncio.run(catch_up(consumer, [consumer.tp], catalogue))
    assert list(catalogue.records) == ["y"] and consumer.polls == []


def test_a_follower_started_again_makes_loading_bundles_wait_for_its_hand_over() -> None:
    """Restarted (a broker restart), the follower reads the topic again from its start;
    a model loading between an item's record and its tombstone took the deleted item (a
    review)."""
    from streams.catalog_follower import catch_up

    catalogue = Catalogue(WorkerMetrics(), caught_up=True)  # it had caught up before
    loading = ContentBundle("r:v2")
    consumer = TwoPolls(between=lambda: catalogue.embed_all(loading))  # a swap asks
    asyncio.run(catch_up(consumer, [consumer.tp], catalogue))
    assert loading.added == []  # x's tombstone was not read yet
    catalogue.hand_over([])
    assert loading.added == [["y"]]


def test_a_follower_started_again_shows_the_old_catalogue_until_its_pass_is_whole() -> None:
    """Read into the catalogue the API serves from, a restarted pass showed deleted x
    again (its tombstone not read yet), and z, whose record and tombstone were compacted
    away while it was down, stayed for good (a review)."""
    from streams.catalog_follower import catch_up

    catalogue = Catalogue(WorkerMetrics(), caught_up=True)
    catalogue.take([message("z", {"item_id": "z", "title": "Z"}),
                    message("y", {"item_id": "y", "title": "old Y"})])
    before = catalogue.records
    seen: list[dict] = []
    reading: list[list[str]] = []
    consumer = TwoPolls(between=lambda: (seen.append(dict(catalogue.records)), reading.append(
        list(catalogue.reading.records) if catalogue.reading else [])))
    asyncio.run(catch_up(consumer, [consumer.tp], catalogue))
    assert seen == [before]  # mid-pass: the old view, whole
    assert reading == [["x", "y"]] and catalogue.reading is None  # the pass, told apart
    assert {i: r.title for i, r in catalogue.records.items()} == {"y": "Y"}
    catalogue.hand_over([bundle := ContentBundle("r:v1")])
    assert bundle.added == [["y"]]


def test_bundles_that_ask_before_the_follower_caught_up_wait_for_the_survivors() -> None:
    """A swap, an experiment's variant or the API's first load while the follower reads
    the topic at start took the records read so far, an item deleted later included."""
    catalogue = Catalogue(WorkerMetrics())
    catalogue.take([message("x", {"item_id": "x", "title": "X"}),
                    message("y", {"item_id": "y", "title": "Y"})])
    early, served = ContentBundle("r:v2"), ContentBundle("r:v1")
    catalogue.embed_all(early)
    assert early.added == []  # x's tombstone may be unread
    catalogue.take([message("x", None)])
    catalogue.hand_over([served, early])
    assert early.added == served.added == [["y"]]  # once each
    late = ContentBundle("r:v3")
    catalogue.embed_all(late)
    assert late.added == [["y"]]


def test_a_bundle_waiting_for_a_catalogue_that_never_comes_can_be_let_go() -> None:
    """With no items topic the follower never catches up: the waiting list held every
    swapped-out champion and variant, one more per retrain."""
    import gc
    import weakref

    catalogue = Catalogue(WorkerMetrics())
    swapped_out = ContentBundle("r:v1")
    watch = weakref.ref(swapped_out)
    catalogue.embed_all(swapped_out)
    del swapped_out
    gc.collect()
    assert watch() is None


def test_catch_up_does_not_wait_for_an_end_that_moved_back() -> None:
    """An unclean leader election can cut a partition's log below the end read at start:
    the position never reaches it, and nothing was ever embedded or followed."""
    from aiokafka import TopicPartition

    from streams.catalog_follower import catch_up

    tp = TopicPartition("items", 0)

    class Consumer:
        ends, polls = [5, 2], 0

        async def end_offsets(self, tps: list) -> dict:
            return {tp: self.ends.pop(0)}

        async def position(self, _: TopicPartition) -> int:
            return 2

        async def getmany(self, *_: object, **__: object) -> dict:
            # A loop waiting for offset 5 polls for ever without yielding to a timer.
            self.polls += 1
            if self.polls > 3:
                raise AssertionError("catch_up waits for an end the log no longer has")
            return {}

    consumer, catalogue = Consumer(), Catalogue(WorkerMetrics())
    asyncio.run(catch_up(consumer, [tp], catalogue))
    assert consumer.ends == [] and consumer.polls == 1  # the end read again, once
    assert catalogue.records == {}


def test_a_load_off_the_loop_answers_its_result_or_its_error() -> None:
    async def both() -> tuple[int, None]:
        return await off_loop(lambda: 6 * 7), await off_loop(lambda: None)

    assert asyncio.run(both()) == (42, None)

    def broken() -> int:
        raise OSError("registry down")

    with pytest.raises(OSError, match="registry down"):
        asyncio.run(off_loop(broken))


def test_a_process_stopped_during_a_slow_load_exits_without_waiting_for_it() -> None:
    """On the loop's default executor the interpreter joined the load's thread at exit: a
    worker stopped while a load waited on a slow registry stayed alive (its state folder
    locked) until the load returned."""
    script = """
import asyncio, time
from streams.catalog_follower import off_loop

async def main():
    load = asyncio.ensure_future(off_loop(lambda: time.sleep(60)))
    await asyncio.sleep(0.2)
    load.cancel()

asyncio.run(main())
print("stopped", flush=True)
"""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=50)
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr
    assert time.monotonic() - started < 30
