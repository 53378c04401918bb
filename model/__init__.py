"""Pure ML with no Kafka or Redis: sequences, encoders, rankers, retrieval, metrics, evaluation.

Imports nothing from ``streams`` or ``services``.
"""
