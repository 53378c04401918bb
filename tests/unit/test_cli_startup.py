"""The CLI starts without TensorFlow: every command would otherwise pay seconds of import
and print TensorFlow's start-up lines on stderr, which breaks one-line errors
(``streamrec stack up`` with a wrong password, ``tests/integration/test_secured.py``)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_no_keras_or_tensorflow_at_start() -> None:
    probe = ("import sys, services.cli; "
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
