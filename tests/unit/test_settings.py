import re
from pathlib import Path

import orjson
import pytest

from infra.errors import StackError
from services.settings import REPO_ROOT, Settings, load_settings


def test_defaults_run_everything_locally(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.data_dir == REPO_ROOT / ".local"
    assert s.kafka_embedded and s.redis_embedded
    assert s.kafka.bootstrap == "127.0.0.1:19092" and s.kafka.protocol == "PLAINTEXT"
    assert s.redis == "redis://127.0.0.1:16379/0"
    assert s.mlflow_uri == f"sqlite:///{REPO_ROOT / '.local' / 'mlflow' / 'mlflow.db'}"
    assert [t.name for t in s.topics()] == [
        "interactions", "interactions.dlq", "recommendations", "model-updates", "items",
        "experiments", "streamrec-worker-sessions-changelog"]
    assert [t.partitions for t in s.topics()] == [4, 1, 4, 1, 1, 1, 4]
    # The catalogue (by item), the experiments (by name) and the sessions (by user) keep
    # their newest records: a changelog made beforehand without compaction is refused.
    assert [t.config for t in s.topics()[-3:]] == [{"cleanup.policy": "compact"}] * 3


def test_env_vars_with_prefix_override(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("STREAMREC_KAFKA_BOOTSTRAP", "broker-a:9092,broker-b:9092")
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://cache:6379/2")
    clean_env.setenv("STREAMREC_TOPIC_INTERACTIONS", "shop.events")
    clean_env.setenv("STREAMREC_INTERACTIONS_PARTITIONS", "12")
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert not s.kafka_embedded and s.kafka.bootstrap == "broker-a:9092,broker-b:9092"
    assert not s.redis_embedded and s.redis == "redis://cache:6379/2"
    assert s.topics()[0].name == "shop.events" and s.topics()[0].partitions == 12
    assert s.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def test_blank_variable_means_local_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_KAFKA_BOOTSTRAP", "  ")
    assert load_settings().kafka_embedded


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("STREAMREC_KAFKA_PORT", "not-a-port", "STREAMREC_KAFKA_PORT"),
        ("STREAMREC_KAFKA_PORT", "80", "STREAMREC_KAFKA_PORT"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("STREAMREC_REDIS_URL", "localhost:6379", "redis://"),
        ("STREAMREC_KAFKA_HEAP", "lots", "STREAMREC_KAFKA_HEAP"),
        ("STREAMREC_INTERACTIONS_PARTITIONS", "0", "STREAMREC_INTERACTIONS_PARTITIONS"),
        ("STREAMREC_CONTENT_CHAR_TOKENS", "-1", "STREAMREC_CONTENT_CHAR_TOKENS"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "host:99999", "host:port"),
        ("STREAMREC_MLFLOW_TRACKING_URI", "sqlite:///mlflow.db", "must be absolute"),
        # librdkafka reads no server in a scheme; Faust splits on ";", librdkafka does not
        ("STREAMREC_KAFKA_BOOTSTRAP", "kafka://h:9092", "no scheme or credentials"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "h1:9092;h2:9092", "no scheme or credentials"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "u:pw@h:9092", "a value with '@', not shown"),
        ("STREAMREC_KAFKA_PORT", "19093", "distinct ports: STREAMREC_KAFKA_PORT=19093, "
         "STREAMREC_KAFKA_CONTROLLER_PORT=19093"),
        ("STREAMREC_REDIS_PORT", "19092", "STREAMREC_REDIS_PORT=19092"),
        ("STREAMREC_API_PORT", "16379", "STREAMREC_API_PORT=16379, STREAMREC_REDIS_PORT=16379"),
        ("STREAMREC_WORKER_METRICS_PORT", "8000", "STREAMREC_API_PORT=8000, "
         "STREAMREC_WORKER_METRICS_PORT=8000"),
        ("STREAMREC_TOPIC_DLQ", "interactions", "each topic needs a name of its own"),
        ("STREAMREC_TOPIC_ITEMS", "the items", "STREAMREC_TOPIC_ITEMS='the items' is not a "
         "Kafka topic name"),
        ("STREAMREC_WORKER_GROUP", "", "STREAMREC_WORKER_GROUP"),
        ("STREAMREC_MLFLOW_EXPERIMENT", "", "STREAMREC_MLFLOW_EXPERIMENT"),
        ("STREAMREC_REDIS_URL", "redis://u:p@ss/w0rd@h:1/0", "percent-encode"),
        # masking ends a URL at a space: the password was printed whole in clients' errors
        ("STREAMREC_REDIS_URL", "redis://u:correct horse@h:1/0", "as %20"),
        ("STREAMREC_MLFLOW_TRACKING_URI", "http://ops:correct horse@h:5000", "as %20"),
        ("STREAMREC_EVENT_WEIGHTS", '{"purchase": NaN}', "finite number"),
        ("STREAMREC_RANKER_HEAD_WEIGHTS", '{"next": Infinity}', "finite number"),
        ("STREAMREC_EVENT_WEIGHTS", '{"purchase": -1}', "finite weights >= 0"),
        ("STREAMREC_EVENT_WEIGHTS", "{bad", "STREAMREC_EVENT_WEIGHTS is not valid JSON"),
        ("STREAMREC_RANKER_HEAD_WEIGHTS", '{"next": 0, "conversion": 0}', "above 0"),
        ("STREAMREC_RANKER_HEAD_WEIGHTS", "{}", "above 0"),
        # an int() of each was a traceback at the worker's start
        ("STREAMREC_SESSION_TTL_DAYS", "inf", "STREAMREC_SESSION_TTL_DAYS"),
        ("STREAMREC_SESSION_GAP_MIN", "nan", "STREAMREC_SESSION_GAP_MIN"),
        ("STREAMREC_WORKER_ENCODER_CACHE_MB", "inf", "STREAMREC_WORKER_ENCODER_CACHE_MB"),
        ("STREAMREC_DATA_DIR", "~no-such-user-7f3a/x", "STREAMREC_DATA_DIR"),
        ("STREAMREC_RECS_CHANNEL", "recs", "users' stored lists"),  # recs:popular
        # Redis refuses an expiry that long: every list write failed, popularity served all
        ("STREAMREC_RECS_TTL_S", "10000000000000000", "STREAMREC_RECS_TTL_S"),
        # a session of 1,000 long ids passed the producer's 1 MB: the worker crash-looped
        ("STREAMREC_SESSION_MAX_ITEMS", "1000", "STREAMREC_SESSION_MAX_ITEMS"),
    ],
)
def test_malformed_values_fail_with_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    clean_env.setenv(var, value)
    with pytest.raises(StackError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("invalid settings")


def test_credentials_put_in_the_bootstrap_never_show(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_KAFKA_BOOTSTRAP", "alice:s3cret@broker:9092")
    with pytest.raises(StackError, match="STREAMREC_KAFKA_BOOTSTRAP") as info:
        load_settings()
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("var, value", [("STREAMREC_REDIS_TLS", "true"),
                                        ("STREAMREC_REDIS_PASSWORD", "s3cretpassword"),
                                        ("STREAMREC_REDIS_USERNAME", "svc")])
def test_embedded_redis_options_beside_an_external_url_are_refused(
        clean_env: pytest.MonkeyPatch, var: str, value: str) -> None:
    """They were ignored: an operator who asked for TLS got plain TCP, and said nothing."""
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://cache.internal:6379/0")
    clean_env.setenv(var, value)
    with pytest.raises(StackError, match="with STREAMREC_REDIS_URL, put the credentials in "
                       "the URL, and use rediss:// for TLS") as info:
        load_settings()
    assert "s3cret" not in str(info.value)


def test_a_mistyped_redis_url_never_shows_its_password(clean_env: pytest.MonkeyPatch) -> None:
    for typo in ("rediss:/streamrec:s3cret@cache:6380/0", ":s3cret@cache:6379/0"):
        clean_env.setenv("STREAMREC_REDIS_URL", typo)
        with pytest.raises(StackError, match="STREAMREC_REDIS_URL: .*redis://") as info:
            load_settings()
        assert "s3cret" not in str(info.value)


def test_task_weights_may_leave_tasks_out_where_head_weights_may_not(
        clean_env: pytest.MonkeyPatch) -> None:
    """A task left out of the training weights weighs 1, so ``{}`` or ``{"next": 0}`` (the
    conversion head alone) train; left out of the head weights it weighs 0."""
    for value in ("{}", '{"next": 0}'):
        clean_env.setenv("STREAMREC_RANKER_TASK_WEIGHTS", value)
        assert load_settings().ranker_task_weights == orjson.loads(value)


def test_a_tracking_uri_with_a_password_and_no_scheme_never_shows_it(
        clean_env: pytest.MonkeyPatch) -> None:
    """MLflow reads ``user:pw@host`` as the scheme ``user`` and echoes the value whole,
    where masking, which looks for ``scheme://``, cannot find it."""
    clean_env.setenv("STREAMREC_MLFLOW_TRACKING_URI", "admin:s3cret@mlflow.internal:5000")
    with pytest.raises(StackError, match="STREAMREC_MLFLOW_TRACKING_URI: .*http://") as info:
        load_settings()
    assert "s3cret" not in str(info.value)
    for fine in ("http://admin:s3cret@mlflow:5000", "/srv/me@work/mlruns", "databricks"):
        clean_env.setenv("STREAMREC_MLFLOW_TRACKING_URI", fine)
        assert load_settings().mlflow_uri == fine


def test_a_relative_data_dir_is_made_absolute(clean_env: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("STREAMREC_DATA_DIR", "state")
    assert load_settings().data_dir == tmp_path.resolve() / "state"


def test_settings_are_frozen(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.kafka_port = 1234  # type: ignore[misc]


@pytest.mark.parametrize("value", ['["rating", "price"]', "rating, price", "rating,price,"])
def test_context_keys_from_a_json_list_or_commas(clean_env: pytest.MonkeyPatch,
                                                 value: str) -> None:
    clean_env.setenv("STREAMREC_CONTEXT_NUMERIC", value)
    clean_env.setenv("STREAMREC_CONTEXT_CATEGORICAL", "device")
    clean_env.setenv("STREAMREC_CONTEXT_BUCKETS", "32")
    spec = load_settings().feature_spec()
    assert (spec.numeric, spec.categorical, spec.buckets) == (("rating", "price"), ("device",), 32)
    assert spec.event_types == ("view", "click", "add_to_cart", "purchase")


def test_no_context_keys_by_default_and_a_key_cannot_be_both(
        clean_env: pytest.MonkeyPatch) -> None:
    spec = load_settings().feature_spec()
    assert (spec.numeric, spec.categorical, spec.buckets) == ((), (), 64)
    clean_env.setenv("STREAMREC_CONTEXT_NUMERIC", "price")
    clean_env.setenv("STREAMREC_CONTEXT_CATEGORICAL", "price,device")
    with pytest.raises(StackError, match="STREAMREC_CONTEXT_NUMERIC.*categorical too"):
        load_settings()


def test_the_ranker_trains_on_the_history_window_the_sessions_keep(
        clean_env: pytest.MonkeyPatch) -> None:
    """Its seen-before features read what a worker's session holds, not whole logs."""
    from services.training_run import configs

    clean_env.setenv("STREAMREC_SESSION_MAX_ITEMS", "120")
    assert configs(load_settings(), None, 0)[1].seen_window == 120


def test_the_retrievers_dropout_is_a_setting_refused_outside_0_to_1(
        clean_env: pytest.MonkeyPatch) -> None:
    """Unset, the log decides (``model.retrieval.training.log_dropout``)."""
    from services.training_run import configs

    assert configs(load_settings(), None, 0)[0].dropout is None
    clean_env.setenv("STREAMREC_RETRIEVER_DROPOUT", "0.5")
    assert configs(load_settings(), None, 0)[0].dropout == 0.5
    clean_env.setenv("STREAMREC_RETRIEVER_DROPOUT", "1")
    with pytest.raises(StackError, match="STREAMREC_RETRIEVER_DROPOUT"):
        load_settings()


def test_a_variable_no_setting_reads_is_refused_by_name_with_the_nearest_one(
        clean_env: pytest.MonkeyPatch) -> None:
    """A typo was ignored: ``STREAMREC_APIKEY`` left the API open to anyone."""
    clean_env.setenv("STREAMREC_APIKEY", "a-key-of-16-or-more-chars")
    with pytest.raises(StackError, match=r"no such setting: STREAMREC_APIKEY \(did you mean "
                       r"STREAMREC_API_KEY\?\)") as info:
        load_settings()
    assert "a-key-of" not in str(info.value)


def test_blank_hosts_and_folders_mean_their_defaults(clean_env: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """``STREAMREC_API_HOST=`` listened on every interface; ``STREAMREC_DATA_DIR=`` put
    the state in the folder a command ran from; a blank liked key turns the rule off."""
    for name in ("STREAMREC_API_HOST", "STREAMREC_WORKER_METRICS_HOST", "STREAMREC_DATA_DIR",
                 "STREAMREC_CONVERSION_LIKED_KEY"):
        clean_env.setenv(name, " ")
    clean_env.chdir(tmp_path)
    s = load_settings()
    assert (s.api_host, s.worker_metrics_host) == ("127.0.0.1", "127.0.0.1")
    assert s.data_dir == REPO_ROOT / ".local"
    assert s.conversion_liked_key is None and s.feature_spec().liked_key is None


@pytest.mark.parametrize(("name", "value", "said"), [
    ("STREAMREC_WORKER_GROUP", "..", "STREAMREC_WORKER_GROUP"),
    ("STREAMREC_WORKER_GROUP", "my group/x", "STREAMREC_WORKER_GROUP"),
    ("STREAMREC_SESSION_GAP_MIN", "1e305", "STREAMREC_SESSION_GAP_MIN"),
    ("STREAMREC_SESSION_GAP_MIN", "1e-6", "STREAMREC_SESSION_GAP_MIN"),
    ("STREAMREC_WORKER_ENCODER_CACHE_MB", "1e304", "STREAMREC_WORKER_ENCODER_CACHE_MB"),
    ("STREAMREC_SESSION_TTL_DAYS", "1e-9", "0 (kept for ever) or at least 1 second"),
    ("STREAMREC_API_CORS_ORIGINS", '["https://shop.example/"]', "STREAMREC_API_CORS_ORIGINS"),
])
def test_values_that_loaded_then_broke_later_are_refused_in_one_line(
        clean_env: pytest.MonkeyPatch, name: str, value: str, said: str) -> None:
    """Each loaded: a group of '..' shared every worker's state folder, 1e305 minutes
    overflowed at the worker's start, 1e-9 days of TTL meant 'for ever', and a CORS origin
    with a trailing slash never matched, so CORS was silently off."""
    clean_env.setenv(name, value)
    with pytest.raises(StackError, match=re.escape(said)):
        load_settings()


def test_cors_origins_take_any_scheme_and_the_wildcard(clean_env: pytest.MonkeyPatch) -> None:
    origins = ["*", "https://shop.example", "chrome-extension://abc", "capacitor://localhost"]
    clean_env.setenv("STREAMREC_API_CORS_ORIGINS", orjson.dumps(origins).decode())
    assert load_settings().api_cors_origins == origins


@pytest.mark.parametrize(("value", "loaded", "worker"), [
    (None, "auto", None), ("auto", "auto", None), ("false", False, False),
    ("TRUE", True, True), ("0", False, False)])
def test_seen_items_in_lists_default_to_the_models_choice(
        clean_env: pytest.MonkeyPatch, tmp_path: Path, value: str | None,
        loaded: object, worker: bool | None) -> None:
    """``auto`` reaches the worker as None: each served model decides
    (``NeuMF.recommends_seen``); true and false override every model."""
    from services.cli_worker import _worker_config

    if value is not None:
        clean_env.setenv("STREAMREC_RECS_EXCLUDE_SEEN", value)
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.recs_exclude_seen == loaded
    assert _worker_config(settings, "1", None).exclude_seen is worker


def test_seen_items_in_lists_refuse_anything_else_in_one_line(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_RECS_EXCLUDE_SEEN", "sometimes")
    with pytest.raises(StackError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text and "STREAMREC_RECS_EXCLUDE_SEEN" in text


def test_posted_events_wait_for_kafka_less_than_the_request_itself(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """The post's wait (plus its second of slack) ends before the request's 504, so a
    client gets Kafka's 503, which says its events were not produced."""
    assert Settings().api_kafka_wait_s == 10.0  # the default: 15 s requests
    assert Settings(api_request_timeout_s=12).api_kafka_wait_s == 10.0  # as before
    for timeout in (1.2, 1.5, 2.0, 3.0, 6.0, 11.0):  # + the post's second of slack, under
        assert Settings(api_request_timeout_s=timeout).api_kafka_wait_s + 1 < timeout
    assert Settings(api_request_timeout_s=0.001).api_kafka_wait_s == 0.1  # 0 ms: for ever


def test_a_sqlite_registry_keeps_its_artifacts_beside_its_database(tmp_path: Path) -> None:
    """A demo run's registry (a sqlite database in its folder) put its models under the
    data dir's store: deleting the run's folder left them behind. The database's folder
    is not ours to make private (``/tmp``, a home): only the artifacts' own folder is."""
    import stat

    from services.stack import mlflow_store

    run = tmp_path / "demo" / "run 1"
    run.mkdir(parents=True)
    run.chmod(0o755)
    uri = f"sqlite:///{tmp_path / 'demo' / 'run%201' / 'mlflow.db'}"  # as SQLAlchemy reads it
    store = mlflow_store(Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=uri))
    assert store.artifact_root == run / "mlflow-artifacts"
    store.ensure()
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.artifact_root.stat().st_mode) == 0o700
    default = mlflow_store(Settings(data_dir=tmp_path / "data"))
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'data' / 'mlflow' / 'mlflow.db'}"
    assert default.artifact_root == tmp_path / "data" / "mlflow" / "artifacts"
    default.ensure()
    assert stat.S_IMODE((tmp_path / "data" / "mlflow").stat().st_mode) == 0o700
    assert mlflow_store(Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=
                                 "http://mlflow:5000")).artifact_root == default.artifact_root
