"""Shared fixtures. Unit tests need nothing running; integration tests get the real stack."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """``services.logs.configure`` sets process-wide logging (a root handler, levels,
    filters, the record factory): the worker's, API's and trainer's tests call it, and so
    do ``train`` and ``evaluate`` without a terminal. Undone after each test, so none
    leaks into the next (a handler left on a closed stream broke later log calls).
    pytest's own capture handlers come and go with each phase: left to it."""
    root, manager = logging.getLogger(), logging.Logger.manager
    factory, handlers, level = logging.getLogRecordFactory(), set(root.handlers), root.level
    kept = {name: (logger.level, logger.filters[:]) for name, logger in
            manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    yield
    logging.setLogRecordFactory(factory)
    for handler in root.handlers[:]:
        if handler not in handlers and type(handler).__module__ != "_pytest.logging":
            root.removeHandler(handler)
    root.setLevel(level)
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):  # one made meanwhile goes back to none set
            was, filters = kept.get(name, (logging.NOTSET, []))
            logger.setLevel(was)
            logger.filters[:] = filters


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every STREAMREC_* variable so a test sees the documented defaults."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def streamrec(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
              ) -> Callable[..., tuple[int, str]]:
    """Run the ``streamrec`` console entry point in-process, as a user's shell would
    (``main``: its one-line errors included); returns (exit code, stderr as one line)."""
    import sys

    from services.cli import main

    def run(*args: str) -> tuple[int, str]:
        clean_env.setattr(sys, "argv", ["streamrec", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        code = exited.value.code
        return (code if isinstance(code, int) else 1), " ".join(capsys.readouterr().err.split())

    return run
