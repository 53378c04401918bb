"""The local stack: Kafka from Maven jars, Redis, the MLflow store, topics.

This layer holds no product logic and imports nothing from ``model``, ``streams``
or ``services``; callers pass in plain paths, ports and names.
"""
