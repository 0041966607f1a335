"""infra/: alert rules, dashboards, compose stack, Kubernetes manifests and systemd units.

What can be checked without a Docker engine or a cluster is checked here:

* ``promtool check rules`` / ``promtool test rules`` / ``promtool check config`` on the real
  files (promtool comes from Debian's ``prometheus`` package, installed by
  ``infra/prometheus/ensure-promtool.sh``; in CI a missing promtool fails, elsewhere it skips);
* every PromQL query of the dashboards parses (promtool, as recording rules);
* every metric a rule or dashboard uses is one of the agreed metric names, with labels it
  really has, and is registered by ``streams/observability/metrics.py`` once that exists;
* dashboards are valid, not drifted from their generator, with unique panel ids;
* compose, Kubernetes and systemd files parse, reference files that exist, carry only
  ``QT_*`` settings that ``streams.config.Settings`` accepts, and have the probes they promise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROM = INFRA / "prometheus"
GRAFANA = INFRA / "grafana"
K8S = INFRA / "k8s"
SYSTEMD = INFRA / "systemd"

#: The agreed metric names (README of infra/, the observability issue): name -> labels.
AGREED: dict[str, frozenset[str]] = {
    "qt_stage_records_total": frozenset({"stage", "topic"}),
    "qt_model_drift_psi": frozenset({"model", "feature"}),
    "qt_model_drift_level": frozenset({"partition"}),
    "qt_model_health_veto_share": frozenset({"partition"}),
    "qt_stage_latency_seconds": frozenset({"stage"}),
    "qt_stage_last_event_timestamp_seconds": frozenset({"stage"}),
    "qt_stage_watermark_ms": frozenset({"stage"}),
    "qt_stage_stalled": frozenset({"stage"}),
    "qt_consumer_lag": frozenset({"topic", "partition"}),
    "qt_deadletters_total": frozenset({"stage", "reason"}),
    "qt_stage_errors_total": frozenset({"stage", "error_type"}),
    "qt_redelivered_total": frozenset({"stage"}),
    "qt_state_flush_seconds": frozenset({"stage"}),
    "qt_signals_total": frozenset({"symbol", "action"}),
    "qt_signal_side_share": frozenset({"scope", "side"}),
    "qt_vetoes_total": frozenset({"rule"}),
    "qt_risk_rejections_total": frozenset({"rule"}),
    "qt_open_positions": frozenset(),
    "qt_equity_usd": frozenset(),
    "qt_drawdown_ratio": frozenset(),
    "qt_realized_pnl_usd": frozenset(),
    "qt_kill_switch": frozenset(),
    "qt_trading_mode": frozenset({"mode"}),
    "qt_model_info": frozenset({"model", "version"}),
    "qt_model_scoring_seconds": frozenset({"model"}),
    "qt_orders_total": frozenset({"side"}),
    "qt_trades_closed_total": frozenset({"exit_reason"}),
    "qt_venue_reconcile_findings_total": frozenset({"kind"}),
    # the live ingest's own process (streams/observability/ingest.py)
    "qt_live_ready": frozenset({"market"}),
    "qt_live_exchange_lag_seconds": frozenset({"market"}),
    "qt_live_connected": frozenset({"connection"}),
    "qt_live_messages_total": frozenset({"connection"}),
    "qt_live_reconnects_total": frozenset({"connection"}),
    "qt_live_idle_timeouts_total": frozenset({"connection"}),
    "qt_live_stream_last_message_timestamp_seconds": frozenset({"stream"}),
    "qt_live_ticks_total": frozenset({"market"}),
    "qt_live_backfilled_total": frozenset({"market"}),
    "qt_live_duplicates_total": frozenset({"market"}),
    "qt_live_missing_klines_total": frozenset({"symbol"}),
    "qt_live_warmup_klines_total": frozenset({"symbol"}),
    "qt_live_rest_requests_total": frozenset({"market"}),
    "qt_live_rest_rate_limited_total": frozenset({"market"}),
    "qt_live_dead_letters_total": frozenset({"market"}),
    "qt_live_universe_refreshes_total": frozenset({"market"}),
    "qt_live_universe_symbols": frozenset({"state"}),
}
HISTOGRAMS = frozenset(
    {"qt_stage_latency_seconds", "qt_model_scoring_seconds", "qt_state_flush_seconds"}
)
#: Series Prometheus writes itself, and the labels it attaches to every scraped series.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
TARGET_LABELS = frozenset({"instance", "job"})
#: ``QT_*`` keys the deployment files may set before ``streams.config.Settings`` has them
#: (none today: every key they use is a setting).
PENDING_SETTINGS: frozenset[str] = frozenset()

PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)
PROMQL_FUNCTIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev"}
    | {"rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "time"}
    | {"abs", "clamp_min", "clamp_max", "group", "vector", "absent", "max_over_time"}
    | {"min_over_time", "avg_over_time", "changes", "resets", "sort", "sort_desc"}
)


# ---------------------------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------------------------


def promtool() -> str:
    """The promtool binary; fails in CI when missing, skips elsewhere."""
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("promtool missing in CI: .ci/run must call infra/prometheus/ensure-promtool.sh")
    pytest.skip("promtool missing: run `bash infra/prometheus/ensure-promtool.sh` (apt, root)")


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_passes() -> None:
    result = run_promtool("check", "rules", "alerts.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run_promtool("test", "rules", "alerts_test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    """The compose mount path of the rules is rewritten to the repository's file."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(PROM / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, written as a recording rule (Grafana variables resolved)."""
    rules = [
        {"record": f"qt_dashboard_query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    result = run_promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ensure_promtool_script_is_valid_and_idempotent() -> None:
    script = PROM / "ensure-promtool.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "apt-get install" in text and "command -v promtool" in text
    if shutil.which("promtool"):  # present: must not touch apt, just report
        result = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "promtool present" in result.stdout


# ---------------------------------------------------------------------------------------------
# Alert rules: shape, runbooks, unit-test coverage
# ---------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_alert_rules_have_duration_severity_and_runbook() -> None:
    readme = (INFRA / "README.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.+)$", readme, flags=re.M)}
    rules = alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, f"{name}: no `for:` duration"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "infra/README.md" and anchor in anchors, f"{name}: runbook {anchor}"


def test_the_issue_asks_for_these_alerts() -> None:
    """Stage stalled, lag growing, bias, drawdown near limit, dead letters, kill switch."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    for metric in (
        "qt_stage_stalled",
        "qt_consumer_lag",
        "qt_signal_side_share",
        "qt_drawdown_ratio",
        "qt_deadletters_total",
        "qt_kill_switch",
    ):
        assert any(metric in expr for expr in exprs.values()), metric


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never checked to stay quiet"


# ---------------------------------------------------------------------------------------------
# Metric names: parsing PromQL
# ---------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_terms(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, functions, label names) a PromQL expression uses."""
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for block in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(block))
    text = _MATCHERS.sub(" ", text)
    for group in _GROUPING.findall(text):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        if word.lower() in PROMQL_KEYWORDS:
            continue
        is_call = text[match.end() :].lstrip().startswith("(")
        (functions if is_call else metrics).add(word)
    return metrics, functions, labels


def base_metric(series: str) -> str:
    """``x_bucket``/``x_sum``/``x_count`` of a histogram ``x`` -> ``x``; others unchanged."""
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return series


def check_expr(expr: str) -> list[str]:
    """Problems of one expression: unknown metrics, functions, or labels the metrics lack."""
    metrics, functions, labels = promql_terms(expr)
    known = {**AGREED, **PROMETHEUS_SERIES}
    problems = [f"unknown metric {m}" for m in metrics if base_metric(m) not in known]
    problems += [f"unknown function {f}" for f in functions if f not in PROMQL_FUNCTIONS]
    allowed = set(TARGET_LABELS)
    for m in metrics:
        allowed |= known.get(base_metric(m), frozenset())
        if m.endswith("_bucket"):
            allowed.add("le")
    problems += [f"label {label} on none of {sorted(metrics)}" for label in labels - allowed]
    return problems


def grafana_to_promql(expr: str) -> str:
    """Resolve the Grafana variables the dashboards use, to get plain PromQL."""
    return expr.replace("$__rate_interval", "5m").replace("$symbol", ".*")


def label_values_as_promql(query: str) -> str:
    """Grafana's ``label_values(metric, label)`` as the PromQL that has the same series."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    return f"group by ({match[2]}) ({match[1]})" if match else query


def dashboard_files() -> list[Path]:
    return sorted((GRAFANA / "dashboards").glob("*.json"))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target and templating query of every dashboard."""
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name} / {panel['title']}", target["expr"]
        for var in board.get("templating", {}).get("list", []):
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            if var.get("type") == "query" and query:
                yield f"{path.name} / ${var['name']}", label_values_as_promql(query)


def used_exprs() -> list[tuple[str, str]]:
    rules = [(f"alerts.yml / {r['alert']}", r["expr"]) for r in alert_rules()]
    return rules + list(dashboard_queries())


def test_promql_checker_catches_wrong_names_and_labels() -> None:
    """The checker itself: it must reject what a typo or a wrong grouping looks like."""
    metrics, functions, labels = promql_terms(
        'sum by (stage, le) (rate(qt_stage_latency_seconds_bucket{stage=~"r.*"}[$__rate_interval]))'
    )
    assert metrics == {"qt_stage_latency_seconds_bucket"}
    assert functions == {"sum", "rate"}
    assert labels == {"stage", "le"}
    assert check_expr("sum(rate(qt_stage_records_total[5m]))") == []
    assert check_expr("qt_stage_record_total") == ["unknown metric qt_stage_record_total"]
    assert check_expr("sum by (symbol) (qt_vetoes_total)") == [
        "label symbol on none of ['qt_vetoes_total']"
    ]
    assert check_expr("rat(qt_orders_total[5m])") == ["unknown function rat"]


@pytest.mark.parametrize("where,expr", used_exprs(), ids=lambda v: str(v)[:60])
def test_metric_names_and_labels_are_the_agreed_ones(where: str, expr: str) -> None:
    assert check_expr(expr) == [], where


def test_dashboards_and_rules_cover_every_metric_family() -> None:
    """Each agreed metric is shown or alerted on somewhere (none is exported for nothing)."""
    used = {base_metric(m) for _, expr in used_exprs() for m in promql_terms(expr)[0]}
    assert set(AGREED) - used == set()


def exported_names() -> set[str]:
    """Names the code registers, in every form a scrape shows them (skip before it exists)."""
    metrics = pytest.importorskip(
        "streams.observability.metrics",
        reason="streams/observability/metrics.py not written yet; names checked against the "
        "agreed list only",
    )
    from streams.observability.ingest import ingest_metric_names

    names = set(metrics.exported_metric_names()) | ingest_metric_names()
    # prometheus_client names a counter family without `_total`; accept either spelling.
    return names | {f"{n}_total" for n in names} | {n.removesuffix("_total") for n in names}


def test_every_metric_used_is_registered_by_the_code() -> None:
    exported = exported_names()
    used = {base_metric(m) for _, expr in used_exprs() for m in promql_terms(expr)[0]}
    assert used - set(PROMETHEUS_SERIES) - exported == set()


def test_the_code_registers_every_agreed_metric() -> None:
    assert set(AGREED) - exported_names() == set()


def test_agreed_labels_and_histograms_match_the_code() -> None:
    """The labels this test checks queries against are the ones the code registers."""
    metrics = pytest.importorskip("streams.observability.metrics")
    from streams.observability.ingest import INGEST_METRICS

    specs = {spec.name: spec for spec in (*metrics.AGREED, *INGEST_METRICS)}
    assert {name: frozenset(spec.labels) for name, spec in specs.items()} == AGREED
    assert {name for name, spec in specs.items() if spec.kind == "histogram"} == HISTOGRAMS


# ---------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------


def test_dashboards_are_the_three_asked_for() -> None:
    assert [p.name for p in dashboard_files()] == ["ai.json", "pipeline.json", "trading.json"]


def test_dashboards_are_generated_and_not_drifted(tmp_path: Path) -> None:
    sys.path.insert(0, str(GRAFANA))
    try:
        import dashboards  # infra/grafana/dashboards.py
    finally:
        sys.path.remove(str(GRAFANA))
    for path in dashboards.main(tmp_path):
        committed = GRAFANA / "dashboards" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} drifted: run .venv/bin/python infra/grafana/dashboards.py"
        )


def provisioned_datasource_uids() -> set[str]:
    doc = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text()
    )
    return {ds["uid"] for ds in doc["datasources"]}


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_is_valid(path: Path) -> None:
    board = json.loads(path.read_text())
    uids = provisioned_datasource_uids()
    panels = board["panels"]
    assert board["uid"] and board["title"] and panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in dashboard_files()]
    assert len(uids) == len(set(uids))


def test_dashboard_provisioning_points_at_the_mounted_dashboards() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    mount = compose()["services"]["grafana"]["volumes"]
    path = doc["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mount


# ---------------------------------------------------------------------------------------------
# YAML, compose, settings
# ---------------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for ext in ("*.yml", "*.yaml") for p in INFRA.rglob(ext))


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_file_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def test_compose_has_the_production_shaped_services() -> None:
    services = compose()["services"]
    expected = {"kafka-1", "kafka-2", "kafka-3", "schema-registry", "timescaledb", "jaeger"}
    expected |= {"prometheus", "grafana", "worker", "journal"}
    assert expected <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), name


def test_compose_kafka_is_a_three_node_kraft_quorum() -> None:
    services = compose()["services"]
    brokers = {n: s["environment"] for n, s in services.items() if n.startswith("kafka-")}
    node_ids = {env["KAFKA_NODE_ID"]: name for name, env in brokers.items()}
    assert len(node_ids) == 3
    for name, env in brokers.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert {i: host.split(":")[0] for i, host in voters.items()} == node_ids
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) < int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
    bootstrap = services["worker"]["environment"]["QT_KAFKA_BOOTSTRAP"].split(",")
    assert sorted(h.split(":")[0] for h in bootstrap) == sorted(brokers)


def test_compose_references_existing_files_and_services() -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source}"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), name
    build = services["worker"]["build"]
    context = (INFRA / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"Dockerfile COPY {source}"


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``compose config`` (schema validation, interpolation) by whichever Compose is installed.

    The Docker CLI plugin (v2) reads the file as it is; Debian's ``docker-compose`` (1.29)
    predates the top-level ``name`` key, so it gets a copy without it. Neither needs an engine.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    }
    plugin = (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if plugin:
        command = ["docker", "compose", "-f", str(INFRA / "compose.yaml")]
    elif shutil.which("docker-compose"):
        copy = tmp_path / "compose.yaml"
        copy.write_text(re.sub(r"^name: .*$", "", (INFRA / "compose.yaml").read_text(), flags=re.M))
        command = ["docker-compose", "-f", str(copy), "--project-directory", str(INFRA)]
    else:
        pytest.skip("no docker compose plugin or docker-compose (Debian package) to validate with")
    return subprocess.run(
        [*command, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # no stray .env is read
        env=base | env,
    )


def test_compose_file_is_valid_for_compose(tmp_path: Path) -> None:
    result = compose_config(tmp_path, {"POSTGRES_PASSWORD": "pw", "GRAFANA_ADMIN_PASSWORD": "pw"})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["worker"]["build"]["context"] == str(ROOT)
    journal_env = resolved["services"]["journal"]["environment"]
    assert (
        journal_env["QT_JOURNAL_DSN"] == "postgresql://quantum:pw@timescaledb:5432/quantum_trader"
    )


def test_compose_refuses_to_start_without_the_passwords(tmp_path: Path) -> None:
    result = compose_config(tmp_path, {})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_compose_prometheus_scrapes_the_worker_web_port() -> None:
    services = compose()["services"]
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "quantum-trader-worker")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and "worker" in services
    assert str(sd["port"]) == services["worker"]["environment"]["QT_WEB_PORT"]
    assert job["metrics_path"] == "/metrics"


def assert_settings_accept(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every QT_* key is a setting (or a pending one) and the values validate."""
    from streams.config import Settings, unknown_env_keys

    qt = {k: str(v) for k, v in env.items() if k.startswith("QT_")}
    assert qt, "no QT_ settings"
    assert set(unknown_env_keys(qt)) <= PENDING_SETTINGS
    for key in [k for k in os.environ if k.startswith("QT_")]:
        monkeypatch.delenv(key)
    for key, value in qt.items():
        if key not in PENDING_SETTINGS:
            monkeypatch.setenv(key, value)
    Settings()  # raises on a value of the wrong type or an unknown mode


@pytest.mark.parametrize("service", ["worker", "journal"])
def test_compose_environment_is_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_settings_accept(compose()["services"][service]["environment"], monkeypatch)


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------


def k8s_docs() -> dict[str, dict[str, Any]]:
    """``Kind/name`` -> manifest, of every file in infra/k8s except the kustomization."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc | {"_file": path.name}
    return docs


def test_k8s_manifests_are_all_deployed_except_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {d["_file"] for d in k8s_docs().values()}
    assert set(kustomization["resources"]) == files - {"secret.template.yaml"}
    for doc in k8s_docs().values():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"], doc["_file"]


def test_k8s_kustomize_builds() -> None:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl missing (kustomize build not checked)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    expected = ["ConfigMap", "Deployment", "Deployment", "Namespace", "PodDisruptionBudget"]
    assert sorted(kinds) == [*expected, "Service"]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port, resolved from its name when it is one."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_k8s_worker_probes_health_and_ready_on_the_web_port() -> None:
    docs = k8s_docs()
    pod = docs["Deployment/quantum-trader-worker"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    web_port = int(docs["ConfigMap/quantum-trader-config"]["data"]["QT_WEB_PORT"])
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/health", "/ready")
    assert container_port(container, live["port"]) == web_port == 6066
    assert container_port(container, ready["port"]) == web_port
    assert pod["terminationGracePeriodSeconds"] >= 30  # Faust leaves the group on SIGTERM
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_pdb_and_metrics_service_select_the_worker_pods() -> None:
    docs = k8s_docs()
    deployment = docs["Deployment/quantum-trader-worker"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = docs["PodDisruptionBudget/quantum-trader-worker"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    service = docs["Service/quantum-trader-worker-metrics"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == 6066
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    target = service["spec"]["ports"][0]["targetPort"]
    assert container_port(container, target) == 6066


def test_k8s_secret_template_holds_no_secret() -> None:
    secret = k8s_docs()["Secret/quantum-trader-secrets"]
    assert "data" not in secret  # base64 values would hide real content
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    refs = [
        env["valueFrom"]["secretKeyRef"]["key"]
        for doc in k8s_docs().values()
        if doc["kind"] == "Deployment"
        for env in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    ]
    assert set(refs) <= set(secret["stringData"])


def test_k8s_configmap_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = k8s_docs()["ConfigMap/quantum-trader-config"]["data"]
    secret_keys = set(k8s_docs()["Secret/quantum-trader-secrets"]["stringData"])
    assert_settings_accept(data | dict.fromkeys(secret_keys, "placeholder"), monkeypatch)


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_worker_unit_runs_one_worker_per_web_port() -> None:
    worker = unit(SYSTEMD / "quantum-trader-worker@.service")
    service = worker["Service"]
    assert service["ExecStart"][0].endswith("quantum-trader worker --web-port %i")
    assert service["KillSignal"] == ["SIGTERM"] and service["Restart"] == ["on-failure"]
    assert "%i" in service["WorkingDirectory"][0]  # one Faust data directory per worker
    assert worker["Install"]["WantedBy"] == ["quantum-trader.target"]
    journal = unit(SYSTEMD / "quantum-trader-journal.service")
    assert journal["Service"]["ExecStart"][0].endswith("quantum-trader journal")
    target = unit(SYSTEMD / "quantum-trader.target")
    assert "quantum-trader-journal.service" in target["Unit"]["Wants"][0]


def test_systemd_environment_example_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (SYSTEMD / "quantum-trader.env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert_settings_accept(env, monkeypatch)


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """systemd's own checker; the install path of the binary is pointed at one that exists."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing")
    for path in SYSTEMD.glob("*.service"):
        text = path.read_text().replace("/opt/quantum-trader/.venv/bin/quantum-trader", "/bin/true")
        (tmp_path / path.name).write_text(text)
    shutil.copy(SYSTEMD / "quantum-trader.target", tmp_path)
    units = ["quantum-trader-worker@6066.service", "quantum-trader-journal.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")
