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
