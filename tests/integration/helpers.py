"""Small helpers shared by the integration tests that run services as processes."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

from services.processes import CLI


def metric(url: str, name: str) -> float:
    """A sample's value from a ``/metrics`` page (summed over its labels)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def train_champion(env: dict[str, str], data: Path, *extra: str, epochs: int = 2
                   ) -> subprocess.CompletedProcess[str]:
    """``streamrec train --model all --champion`` on the jsonl log ``data``, in the stack
    ``env`` names (its data dir); asserts it succeeded, returns its output."""
    done = subprocess.run([*CLI, "train", "--data", str(data), "--format", "jsonl",
                           "--model", "all", "--epochs", str(epochs), "--champion", *extra],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
