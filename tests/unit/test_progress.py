"""Progress bars as a terminal shows them: piped runs (every other test) never draw one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from services.progress import progress_bar
from streams.synthetic import SyntheticConfig, generate


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich takes stderr for a terminal (as it is in a shell), colours and all."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert Console(stderr=True).is_terminal


@pytest.mark.usefixtures("terminal")
def test_a_bar_with_fields_draws_before_its_first_update(
        capsys: pytest.CaptureFixture[str]) -> None:
    """rich 15 draws the bar as its task is added: a field not there yet was a KeyError,
    a traceback from ``train``, ``evaluate``, ``replay`` and ``make demo`` in any terminal."""
    with progress_bar("replay", 10, "{task.fields[rate]:>8,.0f} ev/s  sent {task.fields[sent]:,}"
                      ) as update:
        update(5, rate=120.5, sent=5)
    drawn = capsys.readouterr().err
    assert "replay" in drawn and " 0/10" in drawn  # drawn as added, its fields at 0
    assert " 5/10" in drawn and "120 ev/s  sent 5" in drawn


@pytest.mark.usefixtures("terminal")
def test_evaluate_in_a_terminal_draws_its_bar(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]]) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(
        SyntheticConfig(users=20, items=15, events=300, seed=3))))
    code, text = streamrec("evaluate", "--data", str(path), "--format", "jsonl",
                           "--models", "popularity")
    assert code == 0, text
    assert "train" in text and "valid NDCG@10" in text  # the bar, on stderr
