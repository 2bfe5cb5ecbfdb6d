"""Dockerfile and docker-compose.yml, checked statically: structure, stage order, references between
services, ports, every path they copy or mount, and the compose file as a real compose
implementation (podman-compose) reads it. tests/test_container.py builds and runs the image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import ObserveSettings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def dockerfile_stages() -> list[list[str]]:
    lines = []
    for raw in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multistage_lean_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    export, final = stages[0], stages[-1]
    assert any("[build]" in line for line in export), "model export (the build extra) belongs to the build stage"
    final_runs = [line for line in final if line.startswith("RUN")]
    assert not any(word in line for line in final_runs for word in ("torch", "[build]", "[export]", "optimum"))
    assert any(line.startswith("COPY --from=export /models") for line in final)
    assert not any(line.startswith("RUN pip install") and " . " in f"{line} " for line in final), "no build in runtime"
    first_run = next(i for i, line in enumerate(export) if line.startswith("RUN"))
    assert "torch==2.13.0+cpu" in export[first_run], "CPU torch, pinned, before anything else"
    args_at = [i for i, line in enumerate(export) if line.startswith(("ARG EMBEDDER", "ARG HEAD", "ARG INT8"))]
    installs = [i for i, line in enumerate(export) if line.startswith("RUN") and "pip install" in line]
    assert min(args_at) > max(installs), "model arguments after the installs: changing one reuses the layers"
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    health = [line for line in final if line.startswith("HEALTHCHECK")]
    assert health and "/healthz" in health[0] and "EMOTION_WORKER_OBSERVE__PORT" in health[0]
    assert f"'{ObserveSettings().port}'" in health[0]  # the default port when the variable is unset
    assert any(line.startswith("EXPOSE") and str(ObserveSettings().port) in line for line in final)


def test_dockerfile_copies_paths_that_exist() -> None:
    for stage in dockerfile_stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _dest = line.split()[1:]
                for src in sources:
                    assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "worker" not in ignored and "config" not in ignored


def test_compose_services_and_references() -> None:
    services = compose()["services"]
    assert {"kafka", "create-topics", "worker", "prometheus", "grafana", "producer"} <= set(services)
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, (list, dict)) else []:
            assert dep in services, f"{name} depends on unknown service {dep}"
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["create-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_is_scalable() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed container name breaks --scale"
    assert "ports" not in worker, "a fixed host port breaks --scale"
    assert worker["depends_on"]["create-topics"]["condition"] == "service_completed_successfully"
    env = worker["environment"]
    assert env["EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    topics_cmd = "\n".join(compose()["services"]["create-topics"]["command"])
    for topic in (env["EMOTION_WORKER_KAFKA__INPUT_TOPIC"], env["EMOTION_WORKER_KAFKA__OUTPUT_TOPIC"],
                  env["EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC"]):
        assert f"{topic}:" in topics_cmd


def test_prometheus_discovers_every_replica() -> None:
    services = compose()["services"]
    prom_cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = prom_cfg["scrape_configs"][0]
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == int(services["worker"]["environment"]["EMOTION_WORKER_OBSERVE__PORT"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    for rule_file in prom_cfg["rule_files"]:
        assert rule_file in mounts, f"rule file {rule_file} is not mounted"
    for host in mounts.values():
        assert (ROOT / host).exists()


def test_grafana_provisioning_matches_mounts() -> None:
    services = compose()["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    for host in mounts.values():
        assert (ROOT / host).exists()
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    assert path in mounts
    dash_dir = ROOT / mounts[path]
    dashboards = list(dash_dir.glob("*.json"))
    assert dashboards
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"].startswith("http://prometheus:")
    for panel in json.loads(dashboards[0].read_text())["panels"]:
        assert panel["datasource"]["uid"] == uid
    assert services["producer"]["command"][0] == "produce-samples"


def test_compose_file_as_podman_compose_reads_it() -> None:
    exe = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(exe).exists():
        pytest.skip("podman-compose not installed (the dev extra has it)")
    res = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    assert services["producer"]["healthcheck"]["disable"] is True  # the image's check targets the worker
    assert "healthcheck" not in services["worker"]  # the worker keeps the image's own
    assert services["worker"]["stop_grace_period"] == "40s"
