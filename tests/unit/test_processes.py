"""Child services report through status files: ``ServiceProcess`` passes the path, waits on
the records and notices a service that exits; ``trainer_round`` reads the round back.
A small script stands in for ``streamrec`` so no stack is needed."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from services import processes
from services.processes import ServiceProcess, WorkerFailed, trainer_round
from streams.status import RoundSummary, WorkerStatus

# argv: <command> [args ...] --status-file PATH, as ServiceProcess.start passes them.
FAKE_STREAMREC = r"""
import json, os, sys, time
command, args = sys.argv[1], sys.argv[2:]
path = args[args.index("--status-file") + 1] if "--status-file" in args else None

def write(record):
    with open(path + ".tmp", "w") as handle:
        json.dump(record, handle)
    os.replace(path + ".tmp", path)

print(f"{command} log line", flush=True)
if command == "worker":      # serves v1, swaps to v2, runs until stopped
    write({"model_version": "a:v1"})
    time.sleep(0.3)
    write({"model_version": "a:v2", "swaps_applied": 1})
    time.sleep(60)
elif command == "served":    # writes its record, then exits
    write({"model_version": "a:v1"})
elif command == "trainer":   # trainer --once: a round, exit 1 when it failed
    outcome = "failed" if "--fail" in args else "promoted"
    write({"state": "starting", "rounds": 1,
           "last_round": {"outcome": outcome, "reason": "why", "versions": {"r": "2"},
                          "events": 9}})
    sys.exit(1 if outcome == "failed" else 0)
else:                        # crashes before any record
    print("boom", flush=True)
    sys.exit(3)
"""


@pytest.fixture(autouse=True)
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "CLI", [sys.executable, "-c", FAKE_STREAMREC])


def test_a_service_started_with_status_is_followed_through_its_records(tmp_path: Path) -> None:
    stale = tmp_path / "worker.log.status.json"
    stale.write_bytes(orjson.dumps({"model_version": "old:v9", "swaps_applied": 5}))
    worker = ServiceProcess.start({}, tmp_path / "worker.log", "worker", status=True)
    try:
        assert worker.status == stale  # beside the log; the earlier run's record is gone
        first = worker.wait_status(WorkerStatus, timeout_s=10)
        assert first is not None and first.model_version in {"a:v1", "a:v2"}
        swapped = worker.wait_status(WorkerStatus, lambda w: w.swaps_applied >= 1, 10)
        assert swapped is not None and swapped.model_version == "a:v2"
        assert worker.wait_status(WorkerStatus, lambda w: w.swaps_applied >= 2, 0.6) is None
        assert worker.current_status(WorkerStatus) == swapped
    finally:
        output = worker.stop()
    assert "worker log line" in output


def test_a_record_written_before_exit_still_answers_but_an_exit_ends_the_wait(
    tmp_path: Path,
) -> None:
    served = ServiceProcess.start({}, tmp_path / "served.log", "served", status=True)
    served.proc.wait()
    assert served.wait_status(WorkerStatus, timeout_s=5) == WorkerStatus("a:v1")
    with pytest.raises(WorkerFailed, match="exited with code 0"):
        served.wait_status(WorkerStatus, lambda w: w.swaps_applied >= 1, 5)


def test_a_service_that_exits_without_a_record_fails_the_wait_with_its_log(
    tmp_path: Path,
) -> None:
    crashed = ServiceProcess.start({}, tmp_path / "crash.log", "crash", status=True)
    with pytest.raises(WorkerFailed, match="(?s)exited with code 3.*boom"):
        crashed.wait_status(WorkerStatus, timeout_s=10)


def test_status_needs_a_service_started_with_it(tmp_path: Path) -> None:
    plain = ServiceProcess.start({}, tmp_path / "plain.log", "crash")
    plain.proc.wait()
    with pytest.raises(ValueError, match="without status=True"):
        plain.current_status(WorkerStatus)


def test_trainer_round_returns_the_round_the_trainer_reported(tmp_path: Path) -> None:
    status = tmp_path / "once.json"
    assert trainer_round({}, status, "--epochs", "2") == \
        RoundSummary("promoted", "why", {"r": "2"}, 9)
    with pytest.raises(WorkerFailed, match="exited with code 1"):
        trainer_round({}, status, "--fail")


def test_trainer_round_never_reads_an_earlier_runs_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    status = tmp_path / "once.json"
    assert trainer_round({}, status).outcome == "promoted"
    assert status.exists()
    # A trainer that exits cleanly without reporting a round: the old record must not count.
    monkeypatch.setattr(processes, "CLI", [sys.executable, "-c", "pass"])
    with pytest.raises(WorkerFailed, match="exited with code 0"):
        trainer_round({}, status)
