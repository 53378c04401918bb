"""Shared fixtures. Unit tests need nothing running; integration tests get the real stack."""

from __future__ import annotations

from collections.abc import Callable

import pytest


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
