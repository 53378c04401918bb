"""``streamrec demo`` checks its arguments and its log before it starts the stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def no_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    import services.cli_demo

    def refuse(*args: object) -> None:
        raise AssertionError("the stack was started before the arguments were checked")

    monkeypatch.setattr(services.cli_demo, "build_stack", refuse)


@pytest.mark.parametrize("args, said", [
    (["--train-fraction", "1.5"], "--train-fraction"), (["--rate", "0"], "--rate"),
    (["--events", "0"], "--events"), (["--epochs", "0"], "--epochs"),
    (["--data", "ratings.csv"], "--format is required with --data"),
    (["--format", "movielens"], "--format needs --data"),
    (["--columns", "user,item,time"], "--columns needs --data"),
    (["--data", "x.csv", "--format", "csv", "--columns", "user,time"], "name no item"),
    (["--events", "900"], "the past holds 720 events and the future 180"),
    (["--data", "x.csv", "--format", "csv", "--events", "900"], "does not go with --data"),
])
def test_bad_arguments_stop_the_demo_in_one_line_before_the_stack(
        no_stack: None, streamrec: Callable[..., tuple[int, str]], args: list[str],
        said: str) -> None:
    code, text = streamrec("demo", *args)
    assert code == 2 and said in text and "Traceback" not in text


def test_a_missing_log_stops_the_demo_before_the_stack(
        no_stack: None, streamrec: Callable[..., tuple[int, str]], tmp_path: Path) -> None:
    missing = tmp_path / "ratings.csv"
    assert streamrec("demo", "--data", str(missing), "--format", "movielens") == (
        1, f"error: no such file: {missing}")


def test_the_report_judges_each_users_first_live_event_by_the_list_before_it() -> None:
    """The list after a user's last past event is the one shown before their first live
    event; it was left out, and that event went unjudged (1,082 of the default 12,000)."""
    from services.cli_demo import _report
    from streams.events import Event

    past = [Event("p1", "u1", "a", "view", 1), Event("p2", "u2", "b", "view", 2)]
    future = [Event("f1", "u1", "x", "view", 3), Event("f2", "u1", "y", "view", 4)]

    def shown(event_id: str, items: list[str]) -> dict:
        return {"event_id": event_id, "items": [{"item_id": i} for i in items],
                "path": "model", "sent_us": 1_000, "published_us": 3_000}

    values = [shown("p1", ["x", "q"]), shown("p2", ["z"]), shown("f1", ["q", "y"]),
              shown("f2", ["r"])]
    rows = {row[0]: row[1] for row in zip(*(c.cells for c in _report(
        "r1", past, future, values, 500.0).columns))}
    assert rows["scored next events"] == "2"  # f1 by p1's list, f2 by f1's
    assert rows["online HR@10 (prequential)"] == "1.0000"
    assert rows["online MRR"] == f"{(1 + 1 / 2) / 2:.4f}"
    assert rows["recommendation lists published"] == "2  (model 2)"
    assert rows["latency send→publish p50 / p95 / p99"] == "2.0 / 2.0 / 2.0 ms"
    for v in values:
        v["sent_us"] = 0  # a producer that sets no send time
    rows = {row[0]: row[1] for row in zip(*(c.cells for c in _report(
        "r1", past, future, values, 500.0).columns))}
    assert rows["latency send→publish p50 / p95 / p99"].startswith("n/a")


def test_lists_are_collected_one_per_event_the_first_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A list answered again after a rebalance took a record of the count, and pushed a
    later event's list out of the report."""
    from types import SimpleNamespace

    import orjson

    import services.cli_demo as demo

    answers = [("e1", "first"), ("e1", "again"), ("e2", "first"), ("e3", "first")]
    records = [SimpleNamespace(value=orjson.dumps({"event_id": e, "path": p}))
               for e, p in answers]
    monkeypatch.setattr(demo, "read_topic", lambda *a, **k: iter(records))
    run = SimpleNamespace(settings=SimpleNamespace(kafka=None),
                          topic=lambda name: f"demo-x.{name}")
    worker = SimpleNamespace(log=Path("worker.log"), raise_if_exited=lambda: None)
    events = [SimpleNamespace(event_id=e) for e in ("e1", "e2", "e3")]
    got = demo._collect(run, events, "lists", worker)  # type: ignore[arg-type]
    assert [(v["event_id"], v["path"]) for v in got] == [("e1", "first"), ("e2", "first"),
                                                          ("e3", "first")]
    with pytest.raises(demo.typer.Exit, match="only 3 of 4 lists .* worker log worker.log"):
        demo._collect(run, [*events, SimpleNamespace(event_id="e4")], "lists",
                      worker)  # type: ignore[arg-type]


def test_an_event_id_sent_twice_waits_for_one_list_and_a_dead_worker_stops_the_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker answers an id once: counting events waited a minute for a list that
    never comes, then blamed delivery; and a worker that had died went unnoticed."""
    from types import SimpleNamespace

    import orjson

    import services.cli_demo as demo
    from services.processes import WorkerFailed

    def read_topic(*args: object, on_idle: Callable[[float], None], **kwargs: object):  # noqa: ANN202
        on_idle(0.5)  # a reader that just joined: nothing yet, the worker not asked
        yield SimpleNamespace(value=orjson.dumps({"event_id": "e1", "path": "model"}))
        while True:  # then nothing more: the reader polls, idle
            on_idle(demo.WORKER_CHECK_S + 1)

    monkeypatch.setattr(demo, "read_topic", read_topic)
    run = SimpleNamespace(settings=SimpleNamespace(kafka=None),
                          topic=lambda name: f"demo-x.{name}")
    alive = SimpleNamespace(log=Path("worker.log"), raise_if_exited=lambda: None)
    twice = [SimpleNamespace(event_id="e1"), SimpleNamespace(event_id="e1")]
    assert len(demo._collect(run, twice, "lists", alive)) == 1  # type: ignore[arg-type]

    def exited() -> None:
        raise WorkerFailed("streamrec worker exited with code 1")

    dead = SimpleNamespace(log=Path("worker.log"), raise_if_exited=exited)
    with pytest.raises(WorkerFailed, match="exited with code 1"):
        demo._collect(run, [*twice, SimpleNamespace(event_id="e2")], "lists",
                      dead)  # type: ignore[arg-type]


def test_a_failed_round_is_told_with_its_log_tail_masked(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """``typer.Exit`` prints past the CLI's own masking of user-facing errors."""
    from types import SimpleNamespace

    import services.cli_demo as demo
    from services.processes import WorkerFailed

    def failing(*args: object) -> None:
        raise WorkerFailed("streamrec trainer --once exited with code 1:\nregistry "
                           "http://user:s3cret@mlflow:5000 unreachable")

    monkeypatch.setattr(demo, "trainer_round", failing)
    run = SimpleNamespace(env={}, folder=tmp_path)
    with pytest.raises(demo.typer.Exit) as stopped:
        demo._first_champion(run, 1)  # type: ignore[arg-type]
    said = str(stopped.value)
    assert "s3cret" not in said and "mlflow:5000 unreachable" in said


def test_without_events_the_demo_generates_its_default_log(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--events`` defaults to None now (refused with ``--data``): the default log is
    still 60,000 events, and said so."""
    from services.cli_demo import _prepare_data

    past, future = _prepare_data(None, None, None, 0.8, 500.0, 1_000)
    assert len(past) + len(future) == 60_000
    assert "synthetic (60,000 events" in capsys.readouterr().out
