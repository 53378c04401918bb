"""Experiments between live models as pure math: bucketing, interleaving, tallies, statistics."""
