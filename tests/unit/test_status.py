"""Status records: written atomically, read back typed, nothing written without a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.status import (
    RoundSummary,
    StatusFile,
    TrainerStatus,
    WorkerStatus,
    read_status,
)


def test_trainer_status_round_trips_with_its_last_round(tmp_path: Path) -> None:
    path = tmp_path / "trainer.json"
    assert read_status(path, TrainerStatus) is None
    status = StatusFile(path, TrainerStatus())
    assert read_status(path, TrainerStatus) == TrainerStatus()
    status.update(state="ready", rounds=1,
                  last_round=RoundSummary("promoted", "no champion yet", {"r": "1"}, 500))
    back = read_status(path, TrainerStatus)
    assert back is not None and back.state == "ready" and back.rounds == 1
    assert back.last_round == RoundSummary("promoted", "no champion yet", {"r": "1"}, 500)
    assert back.updated_us > 0
    assert [p.name for p in tmp_path.iterdir()] == ["trainer.json"]  # no temporary left


def test_the_file_is_only_ever_written_whole_by_a_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader (``streamrec stack status``, the demo) must never see half a file: the
    bytes go to a temporary beside it, which is renamed over it."""
    path = tmp_path / "worker.json"
    renamed: list[tuple[str, str]] = []
    write_bytes, rename = Path.write_bytes, Path.replace

    def written(self: Path, data: bytes) -> int:
        assert self != path, "written in place"
        return write_bytes(self, data)

    def replaced(self: Path, target: Path) -> Path:
        renamed.append((self.name, Path(target).name))
        return rename(self, target)

    monkeypatch.setattr(Path, "write_bytes", written)
    monkeypatch.setattr(Path, "replace", replaced)
    StatusFile(path, WorkerStatus("a:v1")).update(swaps_applied=1)
    assert [target for _, target in renamed] == ["worker.json", "worker.json"]
    assert read_status(path, WorkerStatus) is not None


def test_worker_status_counts_swaps(tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    status = StatusFile(path, WorkerStatus("a:v1"))
    status.update(model_version="a:v2", swaps_applied=1)
    assert read_status(path, WorkerStatus) == status.current
    assert status.current.model_version == "a:v2"


def test_a_status_file_that_cannot_be_written_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Raised from a worker's swap (a full disk, its folder removed), it ended the worker."""
    path = tmp_path / "gone" / "worker.json"
    with caplog.at_level("WARNING", logger="streams.status"):
        status = StatusFile(path, WorkerStatus("a:v1"))
        status.update(model_version="a:v2", swaps_applied=1)
    assert status.current.model_version == "a:v2" and not path.exists()
    assert caplog.text.count("not written") == 2
    path.parent.mkdir()
    status.update(swaps_applied=2)
    assert read_status(path, WorkerStatus) == status.current


def test_without_a_path_nothing_is_written(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a relative or empty path would land
    status = StatusFile(None, WorkerStatus("a:v1"))
    status.update(swaps_failed=1, last_error="boom")
    assert status.current.swaps_failed == 1
    assert list(tmp_path.iterdir()) == []
