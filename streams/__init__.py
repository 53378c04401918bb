"""Stream processing: the event schema and topics declared once, Kafka clients, Faust sessions.

Imports only from ``model`` and ``infra``; never from ``services``.
"""
