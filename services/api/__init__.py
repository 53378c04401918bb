"""``streamrec api``: the HTTP face for apps that do not speak Kafka.

``app`` wires the FastAPI application: the routes (``routes``), the middleware (``fast_reads``
for plain list reads, ``metrics`` for Prometheus) and the lifespan that builds what the
routes stand on (``backends``). ``lists`` says where a user's list comes from, ``feed`` fans
the lists the workers publish out to live SSE clients, ``live`` turns that same flow into
the dashboard's figures, ``ingest`` produces POSTed events to Kafka, ``items`` writes the
catalogue, ``experiments`` declares and reads live experiments (through
``experiment_calls``), ``auth`` checks keys, ``timeouts`` cuts slow requests,
``catalogue`` titles and filters lists and feeds from the catalogue the API follows,
``similar`` answers similar items from the champion's ``item_space``, ``schemas`` types the
responses other than the list (which is ``streams.messages.RecommendationList``), and
``dashboard/`` is the page served at ``/``.
"""
