"""Prometheus names: every registry follows the conventions, carries the standard process
and GC collectors, and the monitoring setup (infra/monitoring/) only asks for names the
code exposes, so the dashboard and the alerts cannot drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from services.api.metrics import ApiMetrics
from services.settings import REPO_ROOT
from streams.metrics import WorkerMetrics

MONITORING = REPO_ROOT / "infra" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "streamrec.json"
ALERTS = MONITORING / "alerts.yml"

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Not base units: seconds and bytes it is, as Prometheus asks.
NOT_BASE_UNITS = {"ms", "msec", "millis", "milliseconds", "us", "usec", "micros",
                  "microseconds", "ns", "nanoseconds", "minutes", "min", "hours", "days",
                  "kb", "kib", "mb", "mib", "gb", "gib", "kilobytes", "megabytes", "percent"}
# The last word of a histogram's name: what its observations count.
UNITS = {"seconds", "bytes", "events", "records"}
STANDARD = ("process_", "python_")


def registries() -> dict[str, CollectorRegistry]:
    return {"worker": WorkerMetrics().registry, "api": ApiMetrics().registry}


def exposed(registry: CollectorRegistry) -> dict[str, str]:
    """``# TYPE`` lines of the registry's exposition text: {name as scraped: type}. Every
    metric has one, with or without samples yet."""
    text = generate_latest(registry).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def queryable(types: dict[str, str]) -> set[str]:
    """Every series name a query can use: the families plus histogram series."""
    names = set(types)
    for name, kind in types.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


@pytest.mark.parametrize("process", ["worker", "api"])
def test_every_metric_name_follows_the_prometheus_conventions(process: str) -> None:
    types = exposed(registries()[process])
    own = {name: kind for name, kind in types.items() if not name.startswith(STANDARD)}
    assert len(own) >= 6
    for name, kind in own.items():  # with the *_created gauges prometheus_client adds
        assert SNAKE_CASE.match(name), name
        assert name.startswith(f"streamrec_{process}_"), name
        words = set(name.split("_"))
        assert not words & NOT_BASE_UNITS, f"{name}: use base units (seconds, bytes)"
        # prometheus_client names every counter ..._total itself: only the other half
        # (no gauge or histogram named like a counter) is ours to keep
        assert kind == "counter" or not name.endswith("_total"), \
            f"{name} ({kind}): only counters end in _total"
        if kind == "histogram":
            assert name.rsplit("_", 1)[1] in UNITS, f"{name}: a histogram names its unit"
        if name.endswith("_info"):
            assert kind == "gauge", name


@pytest.mark.parametrize("process", ["worker", "api"])
def test_registries_carry_the_process_and_gc_collectors(process: str) -> None:
    types = exposed(registries()[process])
    assert {"python_gc_collections_total", "python_gc_objects_collected_total",
            "python_info"} <= set(types)
    if Path("/proc/self/stat").exists():  # ProcessCollector reads /proc: Linux only
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
                "process_open_fds"} <= set(types)


def test_the_worker_exposes_lag_model_swaps_and_dead_letters() -> None:
    metrics = WorkerMetrics()
    metrics.lag.labels("3").set(12)
    metrics.serve_model("retriever:4,ranker:2")
    metrics.serve_model("retriever:5,ranker:2")
    sample = metrics.registry.get_sample_value
    assert sample("streamrec_worker_consumer_lag_records", {"partition": "3"}) == 12
    assert sample("streamrec_worker_model_info", {"version": "retriever:5,ranker:2"}) == 1
    assert sample("streamrec_worker_model_info", {"version": "retriever:4,ranker:2"}) is None
    assert {"streamrec_worker_model_swaps_total", "streamrec_worker_dead_letters_total",
            "streamrec_worker_send_to_publish_seconds"} <= set(exposed(metrics.registry))


# --- infra/monitoring asks only for what the code exposes ------------------------------

_PROMQL_NOISE = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings: label values, regexes
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # ranges
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
]
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers that are not functions,
    aggregations, keywords, label names or durations."""
    for noise in _PROMQL_NOISE:
        expr = noise.sub(" ", expr)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\s*\(|\w)", expr)
    return {n for n in names if n.lower() not in _PROMQL_WORDS}


def dashboard_queries() -> list[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return exprs


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_promql_names_are_found() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, stage) (rate('
                        'x_seconds_bucket{job=~"a.*"}[$__rate_interval]))) > 1') == \
        {"x_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / sum(b) or up == 0") == {"a_total", "b", "up"}


def test_the_dashboard_and_alerts_use_only_exposed_metric_names() -> None:
    known = {"up"}  # Prometheus's own, per target
    for registry in registries().values():
        known |= queryable(exposed(registry))
    queries = {"dashboard": dashboard_queries(), "alerts": alert_queries()}
    used: set[str] = set()
    for where, exprs in queries.items():
        assert exprs, where
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{where}: {expr!r} reads no metric"
            assert names <= known, f"{where}: {sorted(names - known)} not exposed: {expr!r}"
            used |= names
    # what the dashboard is for: throughput, lag, stage latency, send->publish, dead
    # letters, model swaps
    for name in ("streamrec_worker_events_total", "streamrec_worker_consumer_lag_records",
                 "streamrec_worker_stage_seconds_bucket",
                 "streamrec_worker_send_to_publish_seconds_bucket",
                 "streamrec_worker_dead_letters_total", "streamrec_worker_model_swaps_total",
                 "streamrec_worker_model_info"):
        assert name in used, name


def test_prometheus_scrapes_the_ports_the_processes_serve_on() -> None:
    from services.settings import Settings

    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker, api = jobs["streamrec-worker"], jobs["streamrec-api"]
    assert worker["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": Settings.model_fields["worker_metrics_port"].default}
    assert api["dns_sd_configs"][0] == {
        "names": ["api"], "type": "A", "port": Settings.model_fields["api_port"].default}
    assert {job.get("metrics_path", "/metrics") for job in jobs.values()} == {"/metrics"}
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
