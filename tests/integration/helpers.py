"""Small helpers shared by the integration tests that run services as processes."""

from __future__ import annotations

import urllib.request


def metric(url: str, name: str) -> float:
    """A sample's value from a ``/metrics`` page (summed over its labels)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")
