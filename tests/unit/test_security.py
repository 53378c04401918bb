"""Client security settings: mapped onto every client library, secrets never shown."""

import ssl
import stat
from pathlib import Path

import pytest

from infra.errors import StackError
from infra.kafka_broker import server_properties
from infra.kafka_client import KafkaConnection
from infra.redis_server import LocalRedis
from infra.tls import TlsFiles
from infra.urls import mask_url, mask_urls
from services.processes import free_port
from services.settings import load_settings
from services.stack import build_stack
from streams.worker import faust_credentials

SASL = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "shop", "sasl.password": "hunter2"}


def test_connection_maps_the_same_properties_onto_each_client(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path).ensure()
    kafka = KafkaConnection("b1:9093,b2:9093", {**SASL, "ssl.ca.location": str(files.ca)})
    conf = kafka.librdkafka(**{"group.id": "g"})
    assert conf == {**SASL, "ssl.ca.location": str(files.ca), "group.id": "g",
                    "bootstrap.servers": "b1:9093,b2:9093"}
    aio = kafka.aiokafka()
    assert (aio["security_protocol"], aio["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-256")
    assert (aio["sasl_plain_username"], aio["sasl_plain_password"]) == ("shop", "hunter2")
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    assert aio["ssl_context"].get_ca_certs()  # the embedded CA, as librdkafka reads it
    creds = faust_credentials(kafka)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-256"
    assert creds.password == "hunter2"


def test_the_embedded_certificates_are_made_anew_before_they_expire(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They were made once and kept: 825 days on, every TLS client of the embedded stack
    would have failed its handshake. One still valid for a while is kept as it is."""
    import datetime as dt

    from cryptography import x509

    import infra.tls

    monkeypatch.setattr(infra.tls, "_VALID_DAYS", 10)  # inside the renewal window
    files = TlsFiles(tmp_path).ensure()
    old_ca, soon = x509.load_pem_x509_certificate(files.ca.read_bytes()), files.valid_until()
    monkeypatch.setattr(infra.tls, "_VALID_DAYS", 825)
    files.ensure()
    assert files.valid_until() > soon + dt.timedelta(days=800)
    new_ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(new_ca)
    assert new_ca.subject != old_ca.subject  # a renewed pair is never taken for the old one
    kept = files.cert.read_bytes()
    assert files.ensure().cert.read_bytes() == kept


def test_every_client_reads_one_spelling_of_protocol_mechanism_and_hostname_check(
        tmp_path: Path) -> None:
    """librdkafka refused "plain" as a mechanism, and took "NONE" as no hostname check
    where aiokafka's context, reading only "none", kept checking."""
    files = TlsFiles(tmp_path).ensure()
    kafka = KafkaConnection("b:9093", {**SASL, "security.protocol": "sasl_ssl",
                                       "sasl.mechanism": "scram-sha-256",
                                       "ssl.ca.location": str(files.ca),
                                       "ssl.endpoint.identification.algorithm": "NONE"})
    conf = kafka.librdkafka()
    assert (conf["security.protocol"], conf["sasl.mechanism"]) == ("SASL_SSL", "SCRAM-SHA-256")
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert kafka.ssl_context().check_hostname is False  # type: ignore[union-attr]


def test_sasl_without_a_mechanism_is_plain_for_every_client() -> None:
    """Settings, aiokafka and the embedded broker took a missing mechanism as PLAIN, while
    librdkafka was given none and took its own default, GSSAPI, which its wheel lacks:
    every producer, consumer and admin client failed (the README's secured demo)."""
    from confluent_kafka import Producer

    kafka = KafkaConnection("127.0.0.1:1", {"security.protocol": "SASL_PLAINTEXT",
                                            "sasl.username": "u", "sasl.password": "p"})
    assert kafka.librdkafka()["sasl.mechanism"] == kafka.aiokafka()["sasl_mechanism"] == "PLAIN"
    Producer(kafka.librdkafka())  # created: librdkafka has the mechanism
    assert "sasl.mechanism" not in KafkaConnection("b:9092").librdkafka()


def test_aiokafka_trusts_every_ca_location_librdkafka_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of certificates and ``probe`` (the system's) work in librdkafka; passed to
    aiokafka's context as a file, the worker stopped with ``Is a directory``. A folder is
    read lazily, at a handshake, so what the context was built with is checked there."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    files = TlsFiles(tmp_path).ensure()
    folder = tmp_path / "cas"
    folder.mkdir()
    built: list[dict] = []
    create = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context",
                        lambda **trust: built.append(trust) or create(**trust))

    def context(where: str) -> ssl.SSLContext:
        kafka = KafkaConnection("b:9093", {"security.protocol": "SSL", "ssl.ca.location": where})
        made = kafka.ssl_context()
        assert isinstance(made, ssl.SSLContext)
        return made

    ca = x509.load_pem_x509_certificate(files.ca.read_bytes()).public_bytes(Encoding.DER)
    assert ca in context(str(files.ca)).get_ca_certs(binary_form=True)
    context(str(folder))
    context("probe")
    assert built == [{"cafile": str(files.ca)}, {"capath": str(folder)}, {}]
    missing = KafkaConnection("b:9093", {"security.protocol": "SSL",
                                         "ssl.ca.location": str(tmp_path / "nope.pem")})
    with pytest.raises(StackError, match="ssl.ca.location .*nope.pem.* is no file or folder"):
        missing.ssl_context()


def test_a_redis_url_that_does_not_parse_is_refused_without_its_password(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://app:Ab3dE/fGh+Ij@cache:6379/0")
    with pytest.raises(StackError, match="percent-encode") as info:
        load_settings()
    assert "Ab3dE" not in str(info.value) and "fGh" not in str(info.value)
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://app:Ab3dE%2FfGh+Ij@cache:6379/0")
    url = load_settings().redis_url
    assert url is not None and url.get_secret_value() == "redis://app:Ab3dE%2FfGh+Ij@cache:6379/0"


def test_plaintext_is_the_default_and_needs_no_credentials() -> None:
    kafka = KafkaConnection("127.0.0.1:9092")
    assert kafka.librdkafka() == {"bootstrap.servers": "127.0.0.1:9092"}
    assert kafka.aiokafka()["security_protocol"] == "PLAINTEXT"
    assert kafka.ssl_context() is None and faust_credentials(kafka) is None


def test_printing_a_connection_never_shows_its_secrets() -> None:
    kafka = KafkaConnection("b:9093", SASL)
    for text in (repr(kafka), str(kafka), f"{kafka}", repr(kafka.security)):
        assert "hunter2" not in text
    assert "shop" in repr(kafka)


@pytest.mark.parametrize("security, words", [
    ({"security.protocol": "SASL_SSL"}, "needs sasl.username"),
    ({"security.protocol": "TLS"}, "security.protocol must be"),
    ({**SASL, "sasl.mechanism": "GSSAPI"}, "sasl.mechanism must be"),
    ({"sasl.jaas.config": "x"}, "unsupported Kafka properties"),
    ({"ssl.endpoint.identification.algorithm": "off"}, "must be https or none"),
    ({"ssl.endpoint.identification.algorithm": ""}, "must be https or none"),
])
def test_bad_properties_are_refused_in_one_line(security: dict, words: str) -> None:
    with pytest.raises(StackError, match=words) as info:
        KafkaConnection("b:9093", security)
    assert "\n" not in str(info.value)


def test_masked_urls_keep_everything_but_the_secrets() -> None:
    assert mask_url("rediss://app:p%40ss@cache:6380/2?ssl_ca_certs=/ca.pem") == \
        "rediss://app:***@cache:6380/2?ssl_ca_certs=/ca.pem"
    assert mask_url("http://u:pw@mlflow:5000/x?token=abc&run=1") == \
        "http://u:***@mlflow:5000/x?token=***&run=1"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"
    # A name alone may be a password without its colon, which clients read as a name.
    assert mask_url("redis://s3cret@cache:6379/0") == "redis://***@cache:6379/0"
    assert mask_url("postgresql://mlflow@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    # No host part: a unix socket (redis-py's form), a local database's socket directory
    assert mask_url("unix:///run/redis.sock?db=0&password=s3cret") == \
        "unix:///run/redis.sock?db=0&password=***"
    assert mask_url("postgresql:///mlflow?host=/run/postgresql&password=s3cret") == \
        "postgresql:///mlflow?host=/run/postgresql&password=***"


@pytest.mark.parametrize("url, masked", [
    ("redis://u:p@ss/w0rd@h:1/0", "redis://u:***@h:1/0"),  # parsed as host "ss"
    ("redis://:p/w@h:1/0", "redis://:***@h:1/0"),
    ("http://user:pa#ss@h/x", "http://user:***@h/x"),
    ("redis://p@ss/w@h", "redis://***@h"),
])
def test_an_unescaped_at_or_slash_in_a_password_prints_none_of_it(url: str, masked: str
                                                                  ) -> None:
    assert mask_url(url) == masked
    assert mask_url("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


@pytest.mark.parametrize("password", ["pa'ss", 'pa"ss', "pa<ss>", "pa'ss/x@y"])
def test_a_quote_in_a_password_in_an_error_line_prints_none_of_it(password: str) -> None:
    """URLs in text end at a quote: ``http://u:pa'ss@h`` was cut to ``http://u:pa``, which
    has no '@', and MLflow's errors carry the whole tracking URI."""
    line = f"API request to http://u:{password}@h:5000/api/2.0/mlflow/runs/create failed"
    masked = mask_urls(line)
    assert "ss" not in masked.replace("/mlflow/runs", ""), masked
    assert masked == "API request to http://u:***@h:5000/api/2.0/mlflow/runs/create failed"
    assert mask_urls("see 'http://h:5000/x' or mail a@b") == "see 'http://h:5000/x' or mail a@b"
    for text in ('{"tracking_uri":"http://mlflow:5000","owner":"ops@shop.com"}',
                 "url='http://h:5000/x',email=a@b.c"):  # text beside a URL stays as it is
        assert mask_urls(text) == text
    assert mask_urls("at http://u:p@ss'word@h:5000/api failed") == \
        "at http://u:***@h:5000/api failed"
    for password in ("pa,ss'w", 'p,a"ss', "p'a,ss"):  # a comma beside a quote
        assert mask_urls(f"at http://u:{password}@h:5000/api failed") == \
            "at http://u:***@h:5000/api failed", password


@pytest.mark.parametrize("text", ["registry refused [http://ops:pw@mlflow:5000]",
                                  "see http://[x]/ now", "at http://u:pw@[::1/x failed",
                                  "at redis://[::1/0?password=pw failed",
                                  "at redis://:pw@[::1/0?x=1&token=pw failed"])
def test_masking_never_raises_on_a_url_that_does_not_parse(text: str) -> None:
    """``urlsplit`` raises on an unmatched bracket: masking runs in the log-record factory,
    so a log call raised, and the CLI's error line printed the password unmasked."""
    masked = mask_urls(text)
    assert "pw" not in masked and masked.split()[0] == text.split()[0]


def test_settings_hold_secrets_and_never_print_them(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_KAFKA_SECURITY", '{"security.protocol": "SASL_SSL", '
                     '"sasl.username": "shop", "sasl.password": "hunter2"}')
    clean_env.setenv("STREAMREC_REDIS_URL", "redis://app:cache-pw@cache:6379/0")
    clean_env.setenv("STREAMREC_MLFLOW_TRACKING_URI", "https://ops:registry-pw@mlflow:5000")
    s = load_settings()
    for secret in ("hunter2", "cache-pw", "registry-pw"):
        assert secret not in repr(s)
    assert s.kafka.get("sasl.password") == "hunter2" and "cache-pw" in s.redis
    assert "registry-pw" in s.mlflow_uri and "registry-pw" not in repr(build_stack(s))
    clean_env.setenv("STREAMREC_REDIS_URL", "http://app:cache-pw@cache:6379/0")
    with pytest.raises(StackError, match="STREAMREC_REDIS_URL") as info:
        load_settings()
    assert "cache-pw" not in str(info.value)


def test_a_bad_event_key_entry_names_its_variable_not_the_key(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_API_EVENT_KEYS", '{"shop-a-secret-key-1234": 5}')
    with pytest.raises(StackError, match="STREAMREC_API_EVENT_KEYS: ") as info:
        load_settings()
    assert "shop-a-secret-key" not in str(info.value).lower()


def test_bad_kafka_properties_fail_as_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMREC_KAFKA_SECURITY", '{"security.protocol": "SASL_SSL"}')
    with pytest.raises(StackError, match="STREAMREC_KAFKA_SECURITY: .*needs sasl.username"):
        load_settings()


def test_the_embedded_broker_listens_as_its_clients_connect(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    clean_env.setenv("STREAMREC_KAFKA_SECURITY", '{"security.protocol": "SASL_SSL", '
                     '"sasl.mechanism": "PLAIN", "sasl.username": "shop", '
                     '"sasl.password": "hunter2"}')
    s = load_settings()
    assert s.kafka.get("ssl.ca.location") == str(tmp_path / "kafka" / "tls" / "ca.pem")
    tls = TlsFiles(tmp_path / "tls")
    props = server_properties(19092, 19093, tmp_path, s.kafka, tls, "node-only-7c1e")
    assert "listeners=SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in props
    assert 'user_shop="hunter2"' in props and f"ssl.keystore.location={tls.keystore}" in props
    # the controller answers admin requests too: it authenticates, with the node's secret
    assert "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL" in props
    assert 'user_controller="node-only-7c1e"' in props and "hunter2\";" in props
    with pytest.raises(StackError, match="controller listener needs a secret"):
        server_properties(19092, 19093, tmp_path, s.kafka, tls)
    plain = server_properties(19092, 19093, tmp_path)
    assert "PLAINTEXT://127.0.0.1:19092" in plain and "sasl" not in plain


@pytest.mark.parametrize("user", ["svc@corp", "a:b", "team/shop", "x+y"])
def test_the_embedded_broker_refuses_a_user_its_jaas_option_cannot_name(
        tmp_path: Path, user: str) -> None:
    """``user_<name>`` is a JAAS option name: Kafka's tokenizer ended it at "@" and the
    like, and the broker exited at start, missing ``user_svc``."""
    kafka = KafkaConnection("b:1", {**SASL, "sasl.mechanism": "PLAIN", "sasl.username": user})
    with pytest.raises(StackError, match="sasl.username must be letters, digits"):
        server_properties(1, 2, tmp_path, kafka, TlsFiles(tmp_path), "node-secret")
    fine = KafkaConnection("b:1", {**SASL, "sasl.mechanism": "PLAIN",
                                   "sasl.username": "svc-shop_1.$eu"})
    assert 'user_svc-shop_1.$eu="hunter2"' in server_properties(
        1, 2, tmp_path, fine, TlsFiles(tmp_path), "node-secret")


def test_embedded_broker_offers_plain_sasl_only(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="PLAIN only"):
        server_properties(1, 2, tmp_path, KafkaConnection("b:1", SASL), TlsFiles(tmp_path))


def test_embedded_redis_keeps_its_password_off_the_command_line(tmp_path: Path) -> None:
    from pydantic import SecretStr

    redis = LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw"), tls=True)
    assert redis.url == ("rediss://app:cache-pw@127.0.0.1:16379/0?ssl_ca_certs="
                         f"{redis.tls_files.ca}")
    conf = redis.write_config()
    text = conf.read_text()
    assert "user default off" in text and "user app on >cache-pw" in text
    assert "tls-port 16379" in text and "port 0" in text
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(redis.tls_files.key.stat().st_mode) == 0o600
    assert "~* &* +@all" in text  # Redis 6.2+ gates pub/sub channels: the feeds need them
    assert "~* +@all" in redis.write_config(channel_rules=False).read_text()  # 6.0 refuses &*
    assert f'tls-cert-file "{redis.tls_files.cert}"' in text  # quoted: a path may hold spaces


def test_a_running_redis_is_reused_only_with_the_password_and_tls_it_started_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reused whatever its config, a Redis started with TLS kept plaintext clients waiting
    30 s; ``stack down`` is the fix, so it is said at once."""
    from pydantic import SecretStr

    LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw"), tls=True).write_config()
    monkeypatch.setattr(LocalRedis, "running_pid", lambda self: 4242)
    assert LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw"), tls=True).start() == 4242
    for changed in (LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw")),
                    LocalRedis(tmp_path, 16379, "app", SecretStr("other-pw"), tls=True),
                    LocalRedis(tmp_path, 16379, tls=True)):
        with pytest.raises(StackError, match="pid 4242.*run 'streamrec stack down' first"):
            changed.start()
    LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw")).write_config(channel_rules=False)
    assert LocalRedis(tmp_path, 16379, "app", SecretStr("cache-pw")).start() == 4242  # Redis 6.0


def test_redis_reads_a_tls_path_with_spaces_and_quotes_whole(tmp_path: Path) -> None:
    """Unquoted, ``tls-cert-file .../My Projects/...`` gave Redis two arguments."""
    import shlex

    home = tmp_path / 'My "Projects"'
    home.mkdir()
    redis = LocalRedis(home, 16379, tls=True)
    text = redis.write_config().read_text()
    line = next(x for x in text.splitlines() if x.startswith("tls-cert-file "))
    assert shlex.split(line)[1:] == [str(redis.tls_files.cert)] and " " in line


def test_a_redis_that_refuses_its_config_never_shows_the_password(tmp_path: Path) -> None:
    """Redis prints a refused config line whole (``>>> 'user app on >pw ...'``), and the
    start-up error quotes its log's tail."""
    from pydantic import SecretStr

    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\n"
                    "echo \">>> 'user app on >$(grep -o 'cache-pw' \"$1\") ~*'\"; exit 1\n")
    fake.chmod(0o755)
    redis = LocalRedis(tmp_path / "home", free_port(), "app", SecretStr("cache-pw"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
        with pytest.raises(StackError, match="exited during start-up") as info:
            redis.start(timeout_s=10)
    assert ">>> 'user app on >*** ~*'" in str(info.value) and "cache-pw" not in str(info.value)


def test_tls_files_chain_to_their_ca(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path).ensure()
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))  # key and chain match
    assert files.keystore.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    first = files.ca.read_bytes()
    assert TlsFiles(tmp_path).ensure().ca.read_bytes() == first  # made once, then reused


def test_announcements_name_the_registry_without_its_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.producer
    from streams.hot_swap import announce
    from streams.messages import ModelAnnouncement

    sent: list[bytes] = []

    class Recorder:
        stats = type("Stats", (), {"failed": 0})()

        def __init__(self, kafka: KafkaConnection) -> None:
            pass

        def produce(self, topic: str, key: bytes, value: bytes) -> None:
            sent.append(value)

        def flush(self, timeout_s: float) -> int:
            return 0

    monkeypatch.setattr(streams.producer, "RecordProducer", Recorder)
    assert announce(KafkaConnection("b:1"), "model-updates", {"r": "2"},
                    "https://ops:registry-pw@mlflow.internal:5000")
    message = ModelAnnouncement.from_json(sent[0])
    assert message.tracking_uri == "https://ops:***@mlflow.internal:5000"
    assert b"registry-pw" not in sent[0]


def test_a_failed_redis_round_trip_names_the_server_without_its_password() -> None:
    from infra.smoke import redis_round_trip

    with pytest.raises(StackError, match=r"Redis round trip to redis://:\*\*\*@127.0.0.1:1/0 ") \
            as info:
        redis_round_trip("redis://:cache-pw-123@127.0.0.1:1/0")  # nothing listens on port 1
    assert "cache-pw-123" not in str(info.value)
