"""deploy/grafana: the dashboard is what deploy/grafana/dashboard.py writes; it type-checks against
Grafana's own published schema (@grafana/schema, with TypeScript); every query parses (promtool)
and names only metrics the services export; the provisioning files match their documented format
and point at each other and at the compose file's mounts."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY, REPO, broken_copy, fails, ok, run, tool

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ecd.json"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
GRAFANA_VERSION = "11.1.0"  # the image deploy/compose.yaml runs; @grafana/schema of the same release
TYPESCRIPT = "5.9.3"

# The one metric the dashboard may name without ecd/metrics.py defining it (the brief's exception),
# used by a panel. Where ecd/metrics.py defines it, it is simply an exported metric.
NOT_YET_EXPORTED = {
    "ecd_scheduler_runs_total": "exported once the schedulers run in the cloud",
}


def load_generator():
    spec = importlib.util.spec_from_file_location("ecd_dashboard", GRAFANA / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text() == load_generator().render(), "run: python deploy/grafana/dashboard.py"


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]


# --- which metrics the services export ------------------------------------------------------------------

SUFFIXES = {"Counter": ["_total", "_created"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count", "_created"],
            "Summary": ["_sum", "_count", "_created"]}


def exported_metrics() -> set[str]:
    """Every sample name ecd/metrics.py defines (read from its source), plus the process and
    platform collectors every service registers, plus Prometheus's own ``up``."""
    names = {"up"}
    tree = ast.parse((REPO / "ecd" / "metrics.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SUFFIXES:
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names |= {first.value + s for s in SUFFIXES[node.func.id]}
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    names |= {s.name for family in registry.collect() for s in family.samples}
    return names


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions (followed by
    a parenthesis), keywords, label matchers, grouping labels, durations or strings."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                               # strings
    e = re.sub(r"\{[^}]*\}", "", e)                                            # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # grouping labels
    e = re.sub(r"\[[^\]]*\]", "", e)                                           # ranges
    e = re.sub(r"\$\w+", "", e)                                                # Grafana variables
    found = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        found.add(m.group())
    return found


def unknown_metrics(dashboard: dict) -> dict[str, set[str]]:
    known = exported_metrics() | set(NOT_YET_EXPORTED)
    out = {}
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        if names - known:
            out[title] = names - known
    return out


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert not unknown_metrics(dashboard)
    exported = exported_metrics()
    assert {"ecd_frames_total", "ecd_stage_seconds_bucket", "ecd_hop_bytes_total", "ecd_queue_depth",
            "ecd_chosen_split", "ecd_privacy_leakage", "process_resident_memory_bytes"} <= exported
    used = set().union(*(metric_names(e) for _, e in queries(dashboard)))
    for name in NOT_YET_EXPORTED:
        assert name in used, f"{name} is listed as an exception but no panel uses it"


def test_metric_check_fails_on_a_misspelt_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text().replace("ecd_hop_bytes_total", "ecd_hop_byte_total", 1))
    assert any("ecd_hop_byte_total" in names for names in unknown_metrics(dashboard).values())


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (stage, le) (rate(ecd_stage_seconds_bucket{job="x"}[$__rate_interval])))') == {
        "ecd_stage_seconds_bucket"}
    assert metric_names('sum by (device) (rate(a_total{d=~"$device"}[5m])) / sum by (device) (rate(b_total[5m]))') == {"a_total", "b_total"}


def panel_ids(dashboard: dict) -> list[str]:
    return [p["title"].lower() for p in panels(dashboard)]


def test_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(panel_ids(json.loads(DASHBOARD.read_text())))
    for want in ("frames per second", "p95 per stage", "bytes per second per hop", "split per device", "privacy per device",
                 "devices per edge", "scheduler runs"):
        assert want in titles, f"no panel {want!r}"


# --- every query parses ------------------------------------------------------------------------------------


def promql_rules_file(dashboard: dict, path: Path) -> Path:
    """The dashboard's queries as recording rules, with Grafana's variables filled in, for promtool."""
    rules = [{"record": f"ecd_dashboard:q{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$device", ".*")}
             for i, (_, expr) in enumerate(queries(dashboard))]
    for var in dashboard["templating"]["list"]:
        q = var["query"]["query"]
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", q)
        assert m, f"variable {var['name']}: unexpected query {q}"
        rules.append({"record": f"ecd_dashboard:{var['name']}", "expr": m.group(1)})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def test_every_query_parses(tmp_path: Path) -> None:
    ok(run([tool("promtool", "Debian package prometheus"), "check", "rules",
            str(promql_rules_file(json.loads(DASHBOARD.read_text()), tmp_path / "q.yml"))]))


def test_parse_check_fails_on_a_broken_query(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text().replace("sum by (service, outcome) (rate(", "sum by (service, outcome) rate((", 1))
    fails(run([tool("promtool", "Debian package prometheus"), "check", "rules", str(promql_rules_file(dashboard, tmp_path / "q.yml"))]),
          "parse error")


# --- against Grafana's published schema -------------------------------------------------------------------


def grafana_schema() -> Path:
    """@grafana/schema and TypeScript from the npm registry, cached under ~/.cache/ecd."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        pytest.skip("validator tsc with @grafana/schema needs node and npm (Debian packages nodejs, npm)")
    cache = Path(os.environ.get("ECD_GRAFANA_SCHEMA_CACHE", Path.home() / ".cache" / "ecd" / f"grafana-schema-{GRAFANA_VERSION}-ts{TYPESCRIPT}"))

    def installed(folder: Path) -> bool:
        return (folder / "node_modules" / "typescript" / "bin" / "tsc").exists() and (folder / "node_modules" / "@grafana" / "schema").exists()

    if not installed(cache):
        # Installed beside the cache, then renamed into place: test processes running at once (xdist
        # workers, other checkouts) see the whole install or none, never one half-written by another.
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        try:
            proc = run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--silent", "--prefix", str(staging),
                        f"@grafana/schema@{GRAFANA_VERSION}", f"typescript@{TYPESCRIPT}"], timeout=300)
            if proc.returncode != 0:
                pytest.skip(f"validator tsc with @grafana/schema@{GRAFANA_VERSION} could not be installed from npm: {proc.stderr[-300:]}")
            if not installed(cache):
                shutil.rmtree(cache, ignore_errors=True)  # what an interrupted install of the old kind left
                try:
                    staging.rename(cache)
                except OSError:
                    assert installed(cache), f"could not move the install into {cache}"  # another process's won
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache


def typescript_check(dashboard_text: str, cache: Path, out: Path):
    """The dashboard, and each panel's options and field config, as TypeScript values typed with
    Grafana's own types (enums loosened to their string values, as JSON holds them)."""
    d = json.loads(dashboard_text)
    base = "./node_modules/@grafana/schema/dist/esm"
    lines = [
        f'import type {{ Dashboard }} from "{base}/index";',
        f'import type * as TimeSeries from "{base}/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";',
        f'import type * as Stat from "{base}/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";',
        ("type Loose<T> = T extends string ? `${T}` : T extends Array<infer U> ? Array<Loose<U>>"
         " : T extends object ? { [K in keyof T]: Loose<T[K]> } : T;"),
        f"export const dashboard: Loose<Dashboard> = {json.dumps(d, indent=1)};",
    ]
    for p in panels(d):
        kind = {"timeseries": "TimeSeries", "stat": "Stat"}[p["type"]]
        lines.append(f"export const options{p['id']}: Loose<{kind}.Options> = {json.dumps(p['options'])};")
        if kind == "TimeSeries":
            lines.append(f"export const custom{p['id']}: Loose<TimeSeries.FieldConfig> = {json.dumps(p['fieldConfig']['defaults'].get('custom', {}))};")
    # A file of its own in the shared cache (named after ``out``): tests running at once never check each other's.
    fd, name = tempfile.mkstemp(prefix=f"{out.stem}-", suffix=out.suffix, dir=cache)
    os.close(fd)
    source = Path(name)
    try:
        source.write_text("\n".join(lines) + "\n")
        tsc = cache / "node_modules" / "typescript" / "bin" / "tsc"
        return run([shutil.which("node"), str(tsc), "--noEmit", "--strict", "--skipLibCheck", "--target", "es2020", "--module", "es2020",
                    "--moduleResolution", "node", source.name], cwd=cache, timeout=180)
    finally:
        source.unlink(missing_ok=True)


def test_dashboard_matches_grafanas_schema() -> None:
    cache = grafana_schema()
    ok(typescript_check(DASHBOARD.read_text(), cache, Path("ecd-dashboard-check.ts")))


@pytest.mark.parametrize("old,new,says", [
    ('"showLegend": true', '"showLegend": "yes"', "not assignable to type 'boolean'"),
    ('"mode": "multi"', '"mode": "multiple"', '"multiple"'),
    ('"schemaVersion": 39', '"schemaVersoin": 39', "schemaVersoin"),
])
def test_schema_check_fails_on_a_broken_copy(old: str, new: str, says: str) -> None:
    cache = grafana_schema()
    text = DASHBOARD.read_text()
    assert old in text
    fails(typescript_check(text.replace(old, new), cache, Path("ecd-dashboard-broken.ts")), says)


# --- provisioning -------------------------------------------------------------------------------------------

PROVISIONING = [
    (GRAFANA / "provisioning" / "datasources" / "prometheus.yml", "grafana-datasources.schema.json"),
    (GRAFANA / "provisioning" / "dashboards" / "ecd.yml", "grafana-dashboard-providers.schema.json"),
]


def schema_check(path: Path, schema: str):
    return run([tool("check-jsonschema", "PyPI check-jsonschema, in the dev extra"), "--schemafile", str(SCHEMAS / schema), str(path)])


@pytest.mark.parametrize("path,schema", PROVISIONING, ids=lambda x: getattr(x, "name", x))
def test_provisioning_files_match_their_format(path: Path, schema: str) -> None:
    ok(schema_check(path, schema))


@pytest.mark.parametrize("path,schema,old,new,says", [
    (*PROVISIONING[0], "access: proxy", "access: proxied", "proxied"),
    (*PROVISIONING[0], "isDefault: true", "is_default: true", "is_default"),
    (*PROVISIONING[1], "path: /var/lib/grafana/dashboards", "paths: /var/lib/grafana/dashboards", "paths"),
], ids=["datasource-access", "datasource-key", "provider-path"])
def test_provisioning_check_fails_on_a_broken_copy(tmp_path: Path, path: Path, schema: str, old: str, new: str, says: str) -> None:
    fails(schema_check(broken_copy(path, tmp_path, old, new), schema), says)


def test_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    ds = yaml.safe_load(PROVISIONING[0][0].read_text())["datasources"]
    uids = {d["uid"] for d in ds}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {p["datasource"]["uid"] for p in panels(dashboard)} | {t["datasource"]["uid"] for p in panels(dashboard) for t in p["targets"]}
    used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert used <= uids
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert any(d["url"] == "http://prometheus:9090" for d in ds) and "prometheus" in compose["services"]
    provider = yaml.safe_load(PROVISIONING[1][0].read_text())["providers"][0]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert compose["services"]["grafana"]["image"] == f"grafana/grafana:{GRAFANA_VERSION}"
