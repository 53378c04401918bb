"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
MONITORING = REPO_ROOT / "infra" / "monitoring"
RESTART_POLICIES = {"unless-stopped", "on-failure", "always"}
# ${VAR}, ${VAR:-default}, ${VAR:?error}, as Compose interpolates them
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _interpolate(value: str, env: dict[str, str]) -> str:
    """``value`` with its variables resolved from ``env`` as Compose would; a required
    one that is missing raises, as ``docker compose`` stops."""
    def resolve(m: re.Match) -> str:
        name, kind, arg = m.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if kind == "-" else ""
    return VARIABLE.sub(resolve, value)


def _one_shot(services: dict[str, dict]) -> set[str]:
    """Services others wait on to finish (``service_completed_successfully``)."""
    return {name for s in services.values() for name, dep in (s.get("depends_on") or {}).items()
            if dep["condition"] == "service_completed_successfully"}


def test_compose_parses_and_has_the_whole_stack() -> None:
    services = _services()
    assert {"kafka", "redis", "mlflow", "worker", "api", "trainer", "prometheus",
            "grafana"} <= set(services)
    assert all(services[name]["profiles"] == ["monitoring"] for name in ("prometheus", "grafana"))


def test_kafka_is_the_version_the_local_stack_runs() -> None:
    version = Settings.model_fields["kafka_version"].default
    assert _services()["kafka"]["image"] == f"apache/kafka:{version}"


def test_kafka_has_an_internal_and_an_external_listener_in_kraft_mode() -> None:
    kafka = _services()["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("ZOOKEEPER" in key for key in env)
    listeners = dict(entry.split("://") for entry in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(entry.split("://") for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    host_port = Settings.model_fields["kafka_port"].default  # what host clients default to
    assert advertised == {"INTERNAL": "kafka:9092", "EXTERNAL": f"localhost:{host_port}"}
    assert listeners["INTERNAL"] == ":9092" and listeners["EXTERNAL"] == f":{host_port}"
    protocols = dict(entry.split(":") for entry in
                     env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert kafka["ports"] == [f"127.0.0.1:{host_port}:{host_port}"]
    containers = {s["environment"]["STREAMREC_KAFKA_BOOTSTRAP"]
                  for s in _services().values() if s.get("build")}
    assert containers == {"kafka:9092"}


def test_every_long_running_service_has_a_health_check_and_a_restart_policy() -> None:
    services = _services()
    one_shot = _one_shot(services)
    assert one_shot == {"stack-init"}
    for name, service in services.items():
        if name in one_shot:
            assert service.get("restart", "no") == "no", name  # it must be allowed to finish
            continue
        assert service.get("restart") in RESTART_POLICIES, name
        check = service.get("healthcheck")
        assert check and check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_dependencies_wait_on_conditions_a_service_can_meet() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, dep in depends.items():
            assert target in services, f"{name} -> {target}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} -> {target}"
            else:
                assert dep["condition"] == "service_completed_successfully", f"{name}"
    for name in ("worker", "api", "trainer"):
        assert {"stack-init", "kafka", "redis"} <= set(services[name]["depends_on"]), name


def test_ports_are_published_on_loopback_only() -> None:
    published = [(name, port) for name, s in _services().items() for port in s.get("ports", [])]
    assert {name for name, _ in published} >= {"kafka", "redis", "mlflow", "api", "prometheus",
                                               "grafana"}
    for name, port in published:
        # "host:published:container"; a short form would listen on every interface
        assert isinstance(port, str), f"{name}: {port!r}"
        host, _published, _container = _interpolate(port, {}).split(":")
        assert host == "127.0.0.1", f"{name}: {port!r} answers other hosts"
    # The API may be published wider, by choice (API_PUBLISH_ADDR), with an API key.
    assert _services()["api"]["ports"] == ["${API_PUBLISH_ADDR:-127.0.0.1}:8000:8000"]
    assert "STREAMREC_API_KEY" in _services()["api"]["environment"]
    assert _services()["worker"].get("ports") is None  # /metrics: Prometheus only


def test_redis_requires_the_password_the_processes_connect_with(tmp_path: Path) -> None:
    """The server takes its password from a config file the command writes, so that it
    never shows on redis-server's command line. The command runs here with the image's
    entrypoint and ``chown`` stood in for, on a password with every awkward character."""
    redis = _services()["redis"]
    password = redis["environment"]["REDISCLI_AUTH"]
    assert password.startswith("${REDIS_PASSWORD:?")
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        _interpolate(password, {})  # no default: compose stops without it
    env = {"REDIS_PASSWORD": "0a1b2c"}
    url = _interpolate(_compose()["x-streamrec-env"]["STREAMREC_REDIS_URL"], env)
    assert url == "redis://:0a1b2c@redis:6379/0"
    assert _interpolate(password, env) == "0a1b2c"

    shell, flag, script = redis["command"]
    assert (shell, flag) == ("sh", "-c") and "REDIS_PASSWORD" not in script
    for stand_in, body in (("docker-entrypoint.sh", 'echo "$@"'), ("chown", ":")):
        (tmp_path / stand_in).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / stand_in).chmod(0o755)
    secret = 'a b"c\\x$`d\'e'
    script = script.replace("$$", "$").replace("/tmp/auth.conf", str(tmp_path / "auth.conf"))
    run = subprocess.run([shell, flag, script], capture_output=True, text=True, check=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "REDISCLI_AUTH": secret})
    assert secret not in run.stdout and run.stdout.split()[:1] == ["redis-server"]
    line = (tmp_path / "auth.conf").read_text()
    written = re.fullmatch(r'requirepass "((?:\\x[0-9a-f]{2})+)"\n', line)
    assert written and bytes.fromhex(written[1].replace("\\x", "")).decode() == secret
    assert (tmp_path / "auth.conf").stat().st_mode & 0o077 == 0  # no one else reads it
    grafana = _services()["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana.startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_every_streamrec_variable_is_a_settings_field() -> None:
    fields = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    for name, service in _services().items():
        env = service.get("environment") or {}
        for var in env:
            if var.startswith("STREAMREC_"):
                assert var in fields, f"{name}: {var} is not a Settings field"
    assert _services()["api"]["environment"]["STREAMREC_API_HOST"] == "0.0.0.0"
    streamrec = [s for s in _services().values() if s.get("build")]
    assert streamrec and all(s["environment"]["STREAMREC_KAFKA_BOOTSTRAP"] for s in streamrec)


def test_compose_values_validate_as_settings() -> None:
    env = _compose()["x-streamrec-env"]
    kwargs = {k.removeprefix("STREAMREC_").lower(): _interpolate(v, {"REDIS_PASSWORD": "x1"})
              for k, v in env.items()}
    s = Settings(**kwargs)
    assert not s.kafka_embedded and not s.redis_embedded and s.data_dir == Path("/data")


def test_monitoring_mounts_config_that_exists_and_parses() -> None:
    mounts = [volume.split(":") for name in ("prometheus", "grafana")
              for volume in _services()[name]["volumes"] if volume.startswith("./")]
    assert len(mounts) == 4
    for source, _target, mode in mounts:
        path = REPO_ROOT / source
        assert path.exists() and mode == "ro", source
        for file in [path] if path.is_file() else sorted(path.rglob("*.*")):
            text = file.read_text()
            assert json.loads(text) if file.suffix == ".json" else yaml.safe_load(text), file
    grafana = _services()["grafana"]["environment"]
    home = grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/streamrec.json"
    provisioning = MONITORING / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "streamrec.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    source = source["datasources"][0]
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "streamrec.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {source["uid"]} and source["url"] == "http://prometheus:9090"


def test_dockerfile_copies_every_layer() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    for layer in ("services", "streams", "model", "infra"):
        assert f"COPY {layer} {layer}" in text


def test_the_image_installs_the_versions_make_setup_does() -> None:
    """The image ran ``pip install -e .`` on the ranges alone: each build resolved that
    day's releases (an unpinned rich once crashed every progress bar)."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    copied = next(line for line in text.splitlines() if line.startswith("COPY pyproject.toml"))
    assert "constraints.txt" in copied.split()
    (install,) = [line for line in text.splitlines() if "pip install" in line]
    assert "-c constraints.txt" in install


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_does_not_take_the_terminals_width_for_a_log_s_columns() -> None:
    """``COLUMNS`` (exported by many shells: the terminal's width) became ``--columns
    120``, and ``make demo`` stopped before the stack started."""
    env = {**os.environ, "COLUMNS": "120"}
    dry = subprocess.run(["make", "-n", "-s", "demo"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    (demo,) = [line for line in dry.splitlines() if "streamrec demo" in line]
    assert "--columns" not in demo
    named = subprocess.run(["make", "-n", "-s", "demo", "DATA=x.csv", "FORMAT=csv",
                            "DATA_COLUMNS=user,item,,time"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert '--columns "user,item,,time"' in named
