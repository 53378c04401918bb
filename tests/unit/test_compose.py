"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked."""

from pathlib import Path

import yaml

from services.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_parses_and_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "mlflow", "worker", "api", "trainer"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.0")


def test_every_streamrec_variable_is_a_settings_field() -> None:
    fields = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        for var in env:
            if var.startswith("STREAMREC_"):
                assert var in fields, f"{name}: {var} is not a Settings field"
    assert _compose()["services"]["api"]["environment"]["STREAMREC_API_HOST"] == "0.0.0.0"
    streamrec = [s for s in _compose()["services"].values() if s.get("build")]
    assert streamrec and all(s["environment"]["STREAMREC_KAFKA_BOOTSTRAP"] for s in streamrec)


def test_compose_values_validate_as_settings() -> None:
    env = _compose()["x-streamrec-env"]
    kwargs = {k.removeprefix("STREAMREC_").lower(): v for k, v in env.items()}
    s = Settings(**kwargs)
    assert not s.kafka_embedded and not s.redis_embedded and s.data_dir == Path("/data")


def test_dockerfile_copies_every_layer() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    for layer in ("services", "streams", "model", "infra"):
        assert f"COPY {layer} {layer}" in text
