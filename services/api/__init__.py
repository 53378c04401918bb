"""``streamrec api``: the HTTP face for apps that do not speak Kafka.

``app`` builds the FastAPI application (routes only), ``feed`` fans the lists the workers
publish out to live SSE clients, ``live`` turns that same flow into the dashboard's figures,
``ingest`` produces POSTed events to Kafka, ``metrics`` is Prometheus, ``schemas`` the typed
responses, and ``dashboard/`` the page served at ``/``.
"""
