"""Shared fixtures. Unit tests need nothing running; integration tests get the real stack."""

from __future__ import annotations

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every STREAMREC_* variable so a test sees the documented defaults."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    return monkeypatch
