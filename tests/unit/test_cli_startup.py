"""The CLI starts without TensorFlow: every command would otherwise pay seconds of import
and print TensorFlow's start-up lines on stderr, which breaks one-line errors
(``streamrec stack up`` with a wrong password, ``tests/integration/test_secured.py``).
And options checked before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_cli_imports_no_keras_or_tensorflow_at_start() -> None:
    probe = ("import sys, services.cli; "
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("worker_id", ["../x", "/tmp/w", ".hidden", "", "a b", "w" * 65])
def test_a_worker_id_that_is_not_a_plain_name_is_refused(worker_id: str) -> None:
    """It names the worker's state folder under the data dir: ``../x`` or an absolute
    path put its state and its lock outside it."""
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["worker", "--worker-id", worker_id])
    assert result.exit_code == 2 and "--worker-id" in result.output


def test_a_plain_worker_id_is_taken() -> None:
    from services.cli_worker import _plain_name

    assert [_plain_name(w) for w in ("0", "eu-1.b_2")] == ["0", "eu-1.b_2"]
