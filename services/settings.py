"""The one settings object. Only this module reads the environment.

Every field maps to an environment variable with the ``STREAMREC_`` prefix
(``kafka_bootstrap`` <- ``STREAMREC_KAFKA_BOOTSTRAP``). Defaults run everything
locally under ``.local/`` in the repository. Build it once in an entry point with
``load_settings()`` and pass it (or the parts a component needs) down.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import redis
from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from infra.errors import StackError
from infra.kafka_broker import LocalKafka
from infra.kafka_client import KafkaConnection
from infra.redis_server import LocalRedis
from infra.topics import TopicSpec
from model.features import HEAD_WEIGHTS, TASK_WEIGHTS, TASKS, FeatureSpec
from streams.events import EVENT_TYPES
from streams.recs_store import KEY_PREFIX
from streams.sessions import changelog_topic

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_SECRET_LENGTH = 16  # API keys and tokens
MAX_TOP_N = 1000  # the most items a stored list holds (recs_top_n)
_Secrets = SecretStr | dict[SecretStr, str] | list[SecretStr] | None
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name
_BROKER_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")  # a name, IPv4 or [IPv6]
_TOPIC_RULE = "1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'; not '.' or '..'"


def _is_topic_name(name: str) -> bool:
    return _TOPIC.fullmatch(name) is not None and name not in (".", "..")


def _no_blank_credentials(url: str) -> None:
    """Refuse a URL whose user part holds a space: masking (``infra.urls``) takes a URL to
    end at the first space, so ``http://ops:correct horse@host`` was printed whole in
    MLflow's and redis-py's errors."""
    if "://" in url and any(c.isspace() for c in url.partition("://")[2].rpartition("@")[0]):
        raise ValueError("a URL whose user or password holds a space (the value is not "
                         "shown); percent-encode it as %20")


class Settings(BaseSettings):
    """Typed, frozen configuration for every streamrec process."""

    # No infinite or NaN numbers: ``STREAMREC_SESSION_TTL_DAYS=inf`` reads as "for ever" but
    # would fail at the first int() with a traceback (0 is "for ever" where there is one).
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore",
                                      allow_inf_nan=False)

    data_dir: Path = Field(REPO_ROOT / ".local", description="local state: jars, broker data, "
                           "Redis AOF, MLflow store, worker state")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: lines for people; json: one JSON object per line "
        "(services/logs.py)")

    # Kafka: unset bootstrap means "run the embedded broker on kafka_port".
    kafka_bootstrap: str | None = Field(None, description="existing cluster, host:port[,...]")
    kafka_port: int = Field(19092, ge=1024, le=65535)
    kafka_controller_port: int = Field(19093, ge=1024, le=65535)
    kafka_version: str = Field("4.4.0", pattern=r"^\d+\.\d+\.\d+$")
    kafka_heap: str = Field("1g", pattern=r"^\d+[mg]$")
    kafka_start_timeout_s: float = Field(90.0, gt=0)
    # librdkafka-style client properties, a JSON object, for every Kafka client (and the
    # embedded broker's listener): STREAMREC_KAFKA_SECURITY='{"security.protocol":
    # "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p",
    # "ssl.ca.location": "/etc/ca.pem"}'. All values are held as secrets.
    kafka_security: dict[str, SecretStr] = Field(
        default_factory=dict, description="security.protocol, sasl.*, ssl.* properties")

    # Redis: unset URL means "run the embedded redis-server on redis_port".
    redis_url: SecretStr | None = Field(
        None, description="existing Redis, redis[s]://[user:password@]host:port/db[?ssl_ca_certs=]")
    redis_port: int = Field(16379, ge=1024, le=65535)
    # The embedded Redis: an ACL user with this password, and TLS only when asked.
    redis_username: str = Field("streamrec", pattern=r"^[A-Za-z0-9_.-]+$")
    redis_password: SecretStr | None = Field(None, description="embedded Redis ACL password")
    redis_tls: bool = Field(False, description="embedded Redis serves TLS only")

    # MLflow: unset means a sqlite store under data_dir; a server URI works too.
    mlflow_tracking_uri: SecretStr | None = Field(None, description="a server URI; it may "
                                                  "carry credentials")
    mlflow_experiment: str = Field("streamrec", min_length=1)

    # Stream workers: one consumer group; state per worker under data_dir/workers/<id>.
    # Faust's app id: it names the changelog topics and each worker's state folder.
    worker_group: str = Field("streamrec-worker", max_length=200)
    worker_batch_size: int = Field(256, ge=1)
    worker_batch_within_ms: int = Field(10, ge=1)
    worker_session_timeout_s: float = Field(
        10.0, ge=6, le=300, description="a worker that stops heartbeating (killed, hung) "
        "loses its partitions after this long; Faust's default, 60 s, stalled them a minute "
        "per kill (docs/RELIABILITY.md)")
    worker_commit_interval_s: float = Field(
        0.5, gt=0, le=60, description="how often a worker commits its offsets; a worker "
        "taking over a partition answers again the events since the last commit")
    worker_static_membership: bool = Field(
        True, description="a worker restarted within the session timeout takes its own "
        "partitions back without a rebalance (Kafka's static membership, instance "
        "<worker id>@<host>); a clean stop then leaves its partitions to the others only "
        "after the session timeout")
    worker_compute_threads: int = Field(1, ge=1, description="BLAS/OpenMP threads per worker")
    worker_store: Literal["memory", "rocksdb"] = Field(
        "rocksdb", description="where a worker keeps its sessions: rocksdb (under its state "
        "folder; a restart reads only the changelog's tail) or memory (replays the whole "
        "changelog on every start)")
    worker_standby_replicas: int = Field(
        1, ge=0, description="workers keeping a standby copy of each partition's sessions "
        "(with rocksdb, a takeover then reads only the changelog's tail)")
    worker_encoder_cache_mb: float = Field(
        1024, gt=0, le=10**7, description="memory for the per-user encoder caches of each "
        "served model (least recently used dropped past it; a dropped user's next event is "
        "encoded from the session)")
    worker_metrics_port: int = Field(9464, ge=0, le=65535, description="/metrics; 0: off")
    worker_metrics_host: str = Field("127.0.0.1", description="/metrics listens here "
                                     "(it has no auth: 0.0.0.0 only inside a private network)")
    recs_top_n: int = Field(10, ge=1, le=MAX_TOP_N)
    recs_ttl_s: int = Field(24 * 3600, ge=1, le=10**9, description="how long Redis keeps "
                            "a user's list (at most ~31 years: Redis refuses longer expiries, "
                            "and every list write would fail)")
    recs_exclude_seen: Literal["auto"] | bool = Field(
        "auto", description="leave the session's items out of its lists; false: the ranker "
        "places its newest among the rest; auto: as the model chose on validation (kept "
        "where users return to items, as in shops; left out where they do not, as in films)")
    recs_channel: str = Field("streamrec:recs", min_length=1, description="Redis pub/sub "
                              "channel of every published list (the API's live feeds)")
    session_gap_min: float = Field(30.0, ge=1 / 60, le=10**7, description="1 s to ~19 years")
    # A session's changelog record is about 1 KiB per item at worst (256-character ids of
    # 4-byte characters, with type, time and context): past 500 it could pass the producer's
    # 1 MB limit, and a worker that cannot write a session exits, again at each redelivery.
    session_max_items: int = Field(50, ge=1, le=500)
    session_ttl_days: float = Field(
        30.0, ge=0, le=10**5, description="a session idle this long, in event time (behind "
        "the newest event of its partition), leaves the table and its changelog; 0: kept for "
        "ever")
    session_sweep_s: float = Field(300.0, gt=0, description="how often a worker looks for "
                                   "idle sessions")
    # Event context keys a session keeps and the ranker learns from; others are counted
    # and left out. A JSON list or comma-separated: STREAMREC_CONTEXT_NUMERIC=rating,price
    context_categorical: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="context keys hashed into context_buckets ids")
    context_numeric: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="context keys normalised as numbers")
    context_buckets: int = Field(64, ge=2, description="hash buckets per categorical key")
    # Event types and tasks. JSON objects: STREAMREC_EVENT_WEIGHTS='{"purchase": 3}'.
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 1.0, "add_to_cart": 1.5,
                                 "purchase": 2.0},
        description="loss weight of a next-item target, by its event type (others: 1)")
    conversion_liked_key: str | None = Field(
        "rating", description="a numeric context key that also marks a conversion ...")
    conversion_liked_min: float = Field(4.0, description="... when at least this (MovieLens)")
    ranker_task_weights: dict[str, float] = Field(
        default_factory=lambda: dict(TASK_WEIGHTS),
        description="weights of the ranker heads' losses in joint training")
    ranker_head_weights: dict[str, float] = Field(
        default_factory=lambda: dict(HEAD_WEIGHTS),
        description="how the ranker heads combine into the served score")
    retriever_content_mode: Literal["map", "sum", "auto"] = Field(
        "auto", description="with a catalogue: 'map' keeps trained items' id embeddings and "
        "maps content onto them for new items; 'sum' makes every item id + content; 'auto' "
        "trains both and keeps the better on validation (twice the retriever's training)")
    retriever_negatives: int = Field(
        1024, ge=1, le=100_000, description="sampled items each training target's softmax "
        "contrasts it with")
    retriever_pool_negatives: bool = Field(
        True, description="draw the negatives once per batch for all its sequences; false: "
        "each sequence draws its own, at 2-4 times the training time")
    retriever_dropout: float | None = Field(
        None, ge=0, lt=1, description="SASRec's dropout; unset: 0.5 for a sparse log (at "
        "most 20 training events a user on average), 0.2 for a denser one "
        "(docs/BENCHMARKS.md)")
    content_char_tokens: int = Field(
        0, ge=0, le=64, description="with a catalogue: token slots per item for character "
        "trigrams of title and text words, beside the 16 word slots (0: none)")

    # API (``streamrec api``): loopback by default; CORS off and no key unless set.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # Who may call it (README "API security"): posting events is open unless an event key
    # is set, reads unless a read key or bearer token is; /healthz and /readyz stay open.
    api_key: SecretStr | None = Field(None, description="X-API-Key that may post events "
                                      "for every user")
    api_event_keys: dict[SecretStr, str] = Field(
        default_factory=dict, description="X-API-Key -> the user-id prefix it may post "
        "events for, a JSON object: '{\"<key>\": \"shop-a:\"}'")
    api_read_keys: list[SecretStr] = Field(
        default_factory=list, description="X-API-Key values that may read lists, feeds, "
        "figures and metrics, a JSON list")
    api_bearer_tokens: list[SecretStr] = Field(
        default_factory=list, description="'Authorization: Bearer' tokens that may read, "
        "a JSON list")
    api_request_timeout_s: float = Field(15.0, gt=0, description="a non-streaming request "
                                         "unanswered after this gets 504")
    api_max_feeds: int = Field(1000, ge=1, description="live feeds open at once; 503 beyond")
    api_cors_origins: list[
        Annotated[str, Field(pattern=r"^(\*|[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+)$")]] = Field(
        default_factory=list, description="scheme://host[:port] each, no path or trailing "
        "slash (browsers send the origin so, and it is compared exactly); * for any")
    api_max_body_bytes: int = Field(1_048_576, ge=1024)
    api_max_events: int = Field(1000, ge=1, description="events per POST /v1/events")
    api_max_items: int = Field(1000, ge=1, description="catalogue records per POST /v1/items")
    api_heartbeat_s: float = Field(15.0, gt=0, description="SSE keep-alive comment interval")

    # Trainer: a round every interval and/or every N new events (0 turns a trigger off).
    trainer_interval_min: float = Field(60.0, ge=0)
    trainer_every_events: int = Field(0, ge=0)
    trainer_holdout_fraction: float = Field(0.1, gt=0, lt=0.5, description="newest events "
                                            "held out for the champion/challenger gate")
    trainer_min_gain: float = Field(0.0, ge=0, description="relative gain on full NDCG@10 "
                                    "a challenger needs over the champion")
    trainer_min_gate_cases: int = Field(200, ge=1, description="gate cases a challenger must "
                                        "win on to replace the champion: fewer leave the "
                                        "bootstrap interval of its gain too wide to trust")
    trainer_min_gate_users: int = Field(20, ge=2, description="users the gate cases must "
                                        "come from: the interval resamples users, and a "
                                        "handful cannot stand for the rest")
    trainer_epochs: int | None = Field(None, ge=1, description="cap; default early stopping")
    trainer_refit_epochs: int = Field(2, ge=0, description="after the gate passes, epochs "
                                      "the promoted models fine-tune on every event, the "
                                      "gate slice included (0: promote them as gated)")
    trainer_min_events: int = Field(1000, ge=1)
    trainer_promotion: Literal["gate", "experiment"] = Field(
        "gate", description="gate: a challenger the gate passes becomes the champion; "
        "experiment: it goes live against the champion first, and later rounds promote it "
        "only if the live experiment says it wins (services/trainer_trial.py)")
    trainer_trial_mode: Literal["ab", "interleave"] = Field(
        "interleave", description="the live trial's mode: interleaving decides with far "
        "fewer events (docs/BENCHMARKS.md, Experiments)")
    trainer_trial_max_hours: float = Field(24.0, gt=0, description="a live trial still "
                                           "undecided after this long ends; the champion stays")

    topic_interactions: str = "interactions"
    topic_dlq: str = "interactions.dlq"
    topic_recommendations: str = "recommendations"
    topic_model_updates: str = "model-updates"
    topic_items: str = Field("items", description="the item catalogue: compacted, key = "
                             "item id (streams/catalog.py)")
    topic_experiments: str = Field("experiments", description="experiments between live "
                                   "models: compacted, key = experiment name "
                                   "(streams/experiment.py)")
    interactions_partitions: int = Field(4, ge=1)
    recommendations_partitions: int = Field(4, ge=1)
    items_partitions: int = Field(1, ge=1, description="every worker reads the whole "
                                  "catalogue, so one keeps all its updates in one order")
    topic_replication: int = Field(1, ge=1)

    @field_validator("kafka_bootstrap", "redis_url", "mlflow_tracking_uri", "redis_password",
                     "conversion_liked_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable means unset: ``STREAMREC_REDIS_URL=``, use the local default;
        ``STREAMREC_CONVERSION_LIKED_KEY=``, no liked rule."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value.strip() or None if isinstance(value, str) else value

    @field_validator("recs_exclude_seen", mode="before")
    @classmethod
    def _true_false_or_auto(cls, value: object) -> object:
        """One message for a word that is none of them: the union's own named each of its
        members in a bracket (``STREAMREC_RECS_EXCLUDE_SEEN["literal['auto']"]``)."""
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        try:
            return word if word == "auto" else TypeAdapter(bool).validate_python(word)
        except ValidationError:
            raise ValueError("true, false or auto") from None

    @field_validator("api_host", "worker_metrics_host", "data_dir", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        """An empty variable means the default here too. Read as given, ``STREAMREC_API_HOST=``
        (a template's unset ``${HOST}``) made the API listen on every interface, and
        ``STREAMREC_DATA_DIR=`` put broker, Redis and MLflow state in whatever folder a
        command ran from."""
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault()
        return value

    @field_validator("worker_group")
    @classmethod
    def _group_names_topics(cls, value: str) -> str:
        """Its changelog topics are named after it (``<group>-sessions-changelog``), and
        its state folder: a topic's rule, which also refuses '.' and '..' (every worker's
        state in one folder)."""
        if not _is_topic_name(value):
            raise ValueError(_TOPIC_RULE)
        return value

    @field_validator("session_ttl_days")
    @classmethod
    def _ttl_at_least_a_second(cls, value: float) -> float:
        """Under a second rounds to 0 ms, which means 'kept for ever'."""
        if 0 < value * 86_400 < 1:
            raise ValueError("0 (kept for ever) or at least 1 second (1.2e-05 days)")
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Absolute: the embedded broker runs in a directory of its own, where a relative
        path (``STREAMREC_DATA_DIR=state``) would name another place."""
        try:
            return value.expanduser().resolve()
        except RuntimeError as exc:  # ~nosuchuser/x: pydantic passes a RuntimeError through
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        """The embedded services' ports: two the same fail only later, inside Kafka or
        Redis, with a message that blames someone else's process."""
        ports = {"STREAMREC_API_PORT": self.api_port,
                 "STREAMREC_WORKER_METRICS_PORT": self.worker_metrics_port or None}
        if self.kafka_bootstrap is None:
            ports |= {"STREAMREC_KAFKA_PORT": self.kafka_port,
                      "STREAMREC_KAFKA_CONTROLLER_PORT": self.kafka_controller_port}
        if self.redis_url is None:
            ports["STREAMREC_REDIS_PORT"] = self.redis_port
        by_port: dict[int, list[str]] = {}
        for name, port in ports.items():
            if port is not None:
                by_port.setdefault(port, []).append(name)
        for port, names in by_port.items():
            if len(names) > 1:
                raise ValueError("the services need distinct ports: " +
                                 ", ".join(f"{name}={port}" for name in names))
        return self

    @model_validator(mode="after")
    def _embedded_redis_options(self) -> Settings:
        """``redis_username``, ``redis_password`` and ``redis_tls`` set up the embedded
        Redis only: beside an external URL they were ignored, and an operator who asked
        for TLS got plain TCP, or for a user got Redis's ``default`` one."""
        if self.redis_url is not None and (self.redis_tls or self.redis_password is not None
                                           or "redis_username" in self.model_fields_set):
            raise ValueError("STREAMREC_REDIS_USERNAME, STREAMREC_REDIS_PASSWORD and "
                             "STREAMREC_REDIS_TLS set up the embedded Redis; with "
                             "STREAMREC_REDIS_URL, put the credentials in the URL, and use "
                             "rediss:// for TLS")
        return self

    @model_validator(mode="after")
    def _topics_distinct(self) -> Settings:
        """Two roles on one topic (``STREAMREC_TOPIC_DLQ=interactions``) would feed dead
        letters back in as events, or compact the events away; Kafka itself refuses a
        bad name only when the topic is first created."""
        topics = {name: getattr(self, name) for name in type(self).model_fields
                  if name.startswith("topic_") and name != "topic_replication"}
        for name, topic in topics.items():
            if not _is_topic_name(topic):
                raise ValueError(f"STREAMREC_{name.upper()}={topic!r} is not a Kafka topic "
                                 f"name ({_TOPIC_RULE})")
        if len(set(topics.values())) < len(topics):
            raise ValueError("each topic needs a name of its own: " +
                             ", ".join(f"STREAMREC_{k.upper()}={v}" for k, v in topics.items()))
        return self

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, value: str | None) -> str | None:
        """Plain ``host:port`` pairs, as every client reads them alike: librdkafka took
        ``kafka://h:9092`` for no server at all (and ``stack up`` waited 90 s), ``h1;h2``
        for one host where Faust splits it, and ``user:password@h`` was printed as it is."""
        if value is None:
            return None
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not _BROKER_HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected host:port[,host:port...], with no scheme or "
                                 "credentials (those go in STREAMREC_KAFKA_SECURITY)")
        return value

    @field_validator("recs_channel")
    @classmethod
    def _not_a_list_key(cls, value: str) -> str:
        """The popularity list lives at ``<channel>:popular``: under ``recs`` it would be
        the stored list of a user named ``popular`` (``recs:<user>``)."""
        if f"{value}:popular".startswith(KEY_PREFIX):
            raise ValueError(f"a channel under {KEY_PREFIX!r} would share its keys with "
                             "users' stored lists")
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: SecretStr | None) -> SecretStr | None:
        """A URI with a password needs its scheme: MLflow reads ``user:pw@host:5000`` as a
        scheme ``user`` and echoes the whole value in its error, where masking, which
        looks for ``scheme://``, cannot find it."""
        uri = value.get_secret_value() if value is not None else ""
        _no_blank_credentials(uri)
        if "@" in uri and "://" not in uri and not uri.startswith(("/", "file:")):
            raise ValueError("expected a server URI such as http://user:pw@host:5000 or a "
                             "local path (the value is not shown: it may hold a password)")
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # Read against each process's own folder: a worker and a trainer started in two
            # folders used two registries, and the worker never saw a champion.
            raise ValueError("a sqlite path must be absolute, e.g. sqlite:////srv/mlflow.db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        url = value.get_secret_value() if value is not None else ""
        if value is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            # Not the value itself: a mistyped URL (``rediss:/user:pw@host``) is not one
            # ``mask_url`` can parse, and it may hold a password.
            scheme = url.partition(":")[0] if ":" in url else ""
            raise ValueError(f"expected a redis://host:port/db URL (or rediss://, unix://), "
                             f"got one with scheme {scheme!r} (the rest is not shown)")
        _no_blank_credentials(url)
        if value is not None:
            try:  # as every client parses it: a password with "/" or "#" unescaped breaks
                redis.connection.parse_url(url)  # the port, and its error quotes the password
                if url.count("@") > 1:  # "u:p@ss/w@host" parses, as host "ss"
                    raise ValueError
            except ValueError:
                raise ValueError("a redis URL that does not parse (the value is not shown); "
                                 "percent-encode '/', '#', '?' and '@' in its password "
                                 "(e.g. %2F)") from None
        return value

    @field_validator("redis_password")
    @classmethod
    def _one_word(cls, value: SecretStr | None) -> SecretStr | None:
        """An ACL rule is one word: a space or quote would end the password there."""
        if value is not None and any(c.isspace() or c in "\"'\\" for c in
                                     value.get_secret_value()):
            raise ValueError("a password without spaces, quotes or backslashes")
        return value

    @field_validator("kafka_security")
    @classmethod
    def _kafka_properties(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Refused here in one line rather than by the first client that connects."""
        try:
            KafkaConnection("-:0", {k: v.get_secret_value() for k, v in value.items()})
        except StackError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("api_key", "api_event_keys", "api_read_keys", "api_bearer_tokens")
    @classmethod
    def _sendable_secrets(cls, value: _Secrets) -> _Secrets:
        """Keys guard the API and travel in headers: refuse, at start, one that is easy to
        guess or that no client could send (an empty STREAMREC_API_KEY would let anyone in)."""
        for secret in [value] if isinstance(value, SecretStr) else value or ():
            text = secret.get_secret_value()
            if len(text) < MIN_SECRET_LENGTH or not all("!" <= c <= "~" for c in text):
                raise ValueError(f"keys and tokens need {MIN_SECRET_LENGTH}+ printable ASCII "
                                 "characters, no spaces")
        return value

    @field_validator("context_categorical", "context_numeric", mode="before")
    @classmethod
    def _key_list(cls, value: object) -> object:
        """A list from the environment either way: ``["rating"]`` or ``rating,price``."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [key.strip() for key in value.split(",") if key.strip()]

    @field_validator("event_weights")
    @classmethod
    def _known_event_types(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown or not all(0 <= w < math.inf for w in value.values()):
            raise ValueError(f"expected finite weights >= 0 for {', '.join(EVENT_TYPES)}; "
                             f"got {value}")
        return value

    @field_validator("ranker_task_weights", "ranker_head_weights")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown or not all(0 <= w < math.inf for w in value.values()):
            raise ValueError(f"expected finite weights >= 0 for tasks {', '.join(TASKS)}; "
                             f"got {value}")
        return value

    @field_validator("ranker_head_weights")
    @classmethod
    def _some_head_counts(cls, value: dict[str, float]) -> dict[str, float]:
        """A head left out weighs 0 in the served score (``head_vector``), so all zeros or
        none would score every item 0: the ranker silently off. (A task left out of
        ``ranker_task_weights`` weighs 1 in training: those may be empty.)"""
        if not any(w > 0 for w in value.values()):
            raise ValueError(f"expected a weight above 0 for at least one of {', '.join(TASKS)}; "
                             f"got {value}")
        return value

    @field_validator("context_numeric")
    @classmethod
    def _not_also_categorical(cls, value: list[str], info: ValidationInfo) -> list[str]:
        both = sorted(set(value) & set(info.data.get("context_categorical", ())))
        if both:
            raise ValueError(f"keys declared categorical too: {both}")
        return value

    # Derived values: computed, never stored twice.
    @property
    def kafka_embedded(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def redis_embedded(self) -> bool:
        return self.redis_url is None

    @property
    def kafka(self) -> KafkaConnection:
        """What every Kafka client is given. The embedded broker over TLS presents a
        certificate from its own CA, which clients then trust unless told otherwise."""
        security = {k: v.get_secret_value() for k, v in self.kafka_security.items()}
        if not self.kafka_embedded:
            return KafkaConnection(self.kafka_bootstrap or "", security)
        if security.get("security.protocol", "").upper().endswith("SSL"):
            security.setdefault("ssl.ca.location", str(self._kafka_home / "tls" / "ca.pem"))
        return KafkaConnection(f"127.0.0.1:{self.kafka_port}", security)

    @property
    def redis(self) -> str:
        """The Redis URL clients use, credentials included: print ``mask_url(redis)``."""
        return self.redis_url.get_secret_value() if self.redis_url else self.local_redis().url

    @property
    def api_kafka_wait_s(self) -> float:
        """How long ``POST /v1/events`` waits for Kafka's acknowledgement: 10 s, or less
        under a request timeout below 12 s (2 s under it, or half of what is left after
        the post's second of slack), so that Kafka's 503 (not produced) comes before the
        request's 504 (maybe produced). Never under 0.1 s, as librdkafka reads a timeout
        of 0 as none: under a request timeout of 1.1 s the 504 may come first."""
        timeout = self.api_request_timeout_s
        return max(0.1, min(10.0, max(timeout - 2, (timeout - 1) / 2)))

    @property
    def exclude_seen(self) -> bool | None:
        """``recs_exclude_seen`` as the serving code takes it: None under ``auto``, where
        each served model decides (``model.pipeline.excludes_seen``)."""
        return None if self.recs_exclude_seen == "auto" else self.recs_exclude_seen

    @property
    def _kafka_home(self) -> Path:
        return self.data_dir / "kafka"

    def local_kafka(self) -> LocalKafka:
        return LocalKafka(self._kafka_home, self.kafka_port, self.kafka_controller_port,
                          self.kafka_version, self.kafka_heap, self.kafka)

    def local_redis(self) -> LocalRedis:
        return LocalRedis(self.data_dir / "redis", self.redis_port, self.redis_username,
                          self.redis_password, self.redis_tls)

    @property
    def mlflow_uri(self) -> str:
        """The registry's URI, credentials included: print ``mask_url(mlflow_uri)``."""
        if self.mlflow_tracking_uri is not None:
            return self.mlflow_tracking_uri.get_secret_value()
        return f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    def feature_spec(self) -> FeatureSpec:
        """The declared context keys, with the event types declared once in
        ``streams.events``: what a worker's sessions keep."""
        return FeatureSpec(event_types=EVENT_TYPES, categorical=tuple(self.context_categorical),
                           numeric=tuple(self.context_numeric), buckets=self.context_buckets,
                           liked_key=self.conversion_liked_key,
                           liked_min=self.conversion_liked_min)

    def type_weights(self) -> tuple[float, ...]:
        """``event_weights`` in type-code order (``FeatureSpec.type_code``), unknown first."""
        return (1.0, *(self.event_weights.get(t, 1.0) for t in EVENT_TYPES))

    def topics(self) -> list[TopicSpec]:
        """Every topic streamrec uses, with its partition count: declared here once."""
        r = self.topic_replication
        return [
            TopicSpec(self.topic_interactions, self.interactions_partitions, r),
            TopicSpec(self.topic_dlq, 1, r),
            TopicSpec(self.topic_recommendations, self.recommendations_partitions, r),
            TopicSpec(self.topic_model_updates, 1, r),
            TopicSpec(self.topic_items, self.items_partitions, r, {"cleanup.policy": "compact"}),
            TopicSpec(self.topic_experiments, 1, r, {"cleanup.policy": "compact"}),
            # Faust makes it too, alike; declared here so that one made beforehand without
            # compaction (an operator's cluster) is refused, not left to lose sessions.
            TopicSpec(changelog_topic(self.worker_group), self.interactions_partitions, r,
                      {"cleanup.policy": "compact"}),
        ]


_SECRET_FIELDS = frozenset(name for name, f in Settings.model_fields.items()
                           if "SecretStr" in str(f.annotation))


def _problem(err: ErrorDetails) -> str:
    """One validation error as ``VARIABLE: why (got value)``, a value with an ``@`` (a
    ``user:password@host`` put where it does not belong) not shown. A secret field names its
    variable only, with no value: the path inside it may be a key (``API_EVENT_KEYS``). A
    rule across fields names its variables in its message; its input, every field, is not
    shown."""
    if not err["loc"]:
        return err["msg"].removeprefix("Value error, ")
    field = str(err["loc"][0])
    if field in _SECRET_FIELDS:
        return f"STREAMREC_{field.upper()}: {err['msg']}"
    # An item inside a field by its index or key: STREAMREC_API_CORS_ORIGINS[0], not a
    # variable of that name (which the unknown-variable check would refuse).
    inside = "".join(f"[{p!r}]" for p in err["loc"][1:])
    value = err.get("input")
    shown = ("a value with '@', not shown: it may hold a password"
             if isinstance(value, str) and "@" in value else repr(value))
    return f"STREAMREC_{field.upper()}{inside}: {err['msg']} (got {shown})"


def _unknown_variables() -> list[str]:
    """``STREAMREC_*`` variables no setting reads, each with the setting it most likely
    meant: a typo (``STREAMREC_APIKEY``) was ignored, and left the API open."""
    known = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(n for n in os.environ if n.upper().startswith("STREAMREC_")
                     and n.upper() not in known)
    return [name + "".join(f" (did you mean {near}?)" for near in
                           difflib.get_close_matches(name.upper(), known, n=1))
            for name in unknown]


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; turn validation errors, and variables named like
    settings that no setting reads, into one readable line (names only, never values)."""
    if unknown := _unknown_variables():
        raise StackError(f"invalid settings: no such setting: {'; '.join(unknown)}")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:  # a value that is not JSON where JSON is expected
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"STREAMREC_{field.group(1).upper()}" if field else "a setting"
        raise StackError(f"invalid settings: {name} is not valid JSON ({exc.__cause__ or exc})"
                         ) from None
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise StackError(f"invalid settings: {problems}") from None
