"""Metrics, health, dashboard and alert rules, checked with a real Prometheus scraping a real worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from testkit.kafka import Topics, WorkerProcess, produce, read_all, start_worker
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus not installed")


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:  # not listening yet
        return 0, b""


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "emotion-worker.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def as_bool(expr: str) -> str:
    """An alert condition turned into a query that returns its series whether or not it fires."""
    return re.sub(r"\s(==|!=|>=|<=|>|<)\s", lambda m: f" {m.group(1)} bool ", expr)


def test_promtool_checks_rules() -> None:
    res = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture()
def scraped_worker(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path
                   ) -> Iterator[tuple[WorkerProcess, str, Topics]]:
    topics = Topics.fresh(broker, partitions=2)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log")
    prom_port = free_port()
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "emotion-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}]}],
    }
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(cfg))
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prom.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prom.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=(tmp_path / "prom.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        yield worker, f"http://127.0.0.1:{prom_port}", topics
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        assert worker.stop() == 0


def query(base: str, expr: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    doc = orjson.loads(body)
    assert status == 200 and doc["status"] == "success", (expr, doc)
    return list(doc["data"]["result"])


def wait_for(fn: Any, timeout: float, what: str) -> Any:
    last = wait_until(fn, timeout, interval=0.1)
    if not last:
        raise AssertionError(f"timed out waiting for {what}: {last}")
    return last


def test_prometheus_scrapes_counts_and_every_query_returns_data(
    scraped_worker: tuple[WorkerProcess, str, Topics], broker: LocalBroker
) -> None:
    worker, prom, topics = scraped_worker
    wait_for(lambda: http_get(f"http://127.0.0.1:{worker.port}/readyz")[0] == 200, 60, "worker ready")
    status, body = http_get(f"http://127.0.0.1:{worker.port}/healthz")
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    good, bad = 150, 12
    records = [(b"k", orjson.dumps({"id": i, "text": f"thanks a lot {i}"}), []) for i in range(good)]
    records += [(b"k", b"{not json", []) for _ in range(bad - 2)] + [(b"k", b'{"text": ""}', [])] * 2
    produce(broker.bootstrap, topics.input, records)
    assert len(read_all(broker.bootstrap, topics.output, expect=good, timeout=60)) == good

    def counters() -> bool:
        c = query(prom, "sum(emotion_worker_messages_consumed_total)")
        p = query(prom, "sum(emotion_worker_messages_published_total)")
        d = query(prom, "sum(emotion_worker_messages_dead_lettered_total)")
        return bool(c and p and d) and (float(c[0]["value"][1]), float(p[0]["value"][1]),
                                         float(d[0]["value"][1])) == (good + bad, good, bad)

    wait_for(counters, 60, "scraped counters to match the messages sent")
    reasons = {r["metric"]["reason"]: float(r["value"][1])
               for r in query(prom, "emotion_worker_messages_dead_lettered_total > 0")}
    assert reasons == {"invalid_json": bad - 2, "empty_text": 2}
    labelled = query(prom, "sum(emotion_worker_labels_total) + sum(emotion_worker_no_label_messages_total)")
    assert float(labelled[0]["value"][1]) >= good

    exprs = [e.replace("$__rate_interval", "1m") for e in dashboard_exprs()]
    exprs += [r["expr"] for r in rules() if "record" in r]
    exprs += [as_bool(r["expr"]) for r in rules() if "alert" in r]
    # Lag comes from librdkafka statistics every 5 s; give every series time to appear.
    empty = exprs

    def all_have_data() -> bool:
        nonlocal empty
        empty = [e for e in exprs if not query(prom, e)]
        return not empty

    assert wait_until(all_have_data, 45, interval=0.5), f"queries without data: {empty}"
    # Each alert expression also runs as written (firing or not).
    for r in rules():
        if "alert" in r:
            query(prom, r["expr"])


def test_readyz_red_until_joined_and_healthz_while_running(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path,
                                                           tmp_path: Path) -> None:
    topics = Topics.fresh(broker)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{worker.port}/healthz")[0] == 200, 60, "healthz")
        # Live while the model loads; ready only once it has loaded and the group is joined.
        wait_for(lambda: orjson.loads(http_get(f"http://127.0.0.1:{worker.port}/readyz")[1])["model_loaded"],
                 60, "model loaded")
        status, body = http_get(f"http://127.0.0.1:{worker.port}/readyz")
        doc = orjson.loads(body)
        if status == 503:
            assert doc["group_joined"] is False
        wait_for(lambda: http_get(f"http://127.0.0.1:{worker.port}/readyz")[0] == 200, 60, "ready")
        status, body = http_get(f"http://127.0.0.1:{worker.port}/metrics")
        assert status == 200
        text = body.decode()
        assert 'emotion_worker_build_info{' in text and "thresholds_hash" in text
        assert "emotion_worker_end_to_end_latency_seconds_bucket{le=\"0.005\"}" in text
        assert "emotion_worker_end_to_end_latency_seconds_bucket{le=\"30.0\"}" in text
    finally:
        assert worker.stop() == 0


def test_stuck_poll_loop_turns_healthz_red() -> None:
    from worker.observe.health import Health

    h = Health(stall_after_s=0.2)
    assert h.live()[0]
    time.sleep(0.3)
    ok, body = h.live()
    assert not ok and body["status"] == "stalled"
    h.beat()
    assert h.live()[0]
