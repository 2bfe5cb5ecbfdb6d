"""Kubernetes manifests (deploy/k8s): validated against the Kubernetes, KEDA and Prometheus Operator
schemas by kubernetes-models (npm), rendered by `kubectl kustomize`, and checked against the worker:
its settings load, probes hit the real endpoints, the grace period covers the shutdown timeout,
the scaler stays within the input partitions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import ObserveSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"


def manifest(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / name).read_text()))


def test_manifests_match_their_schemas() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the schema check (kubernetes-models)")
    validate = K8S / "validate"
    if not (validate / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=validate, check=True, capture_output=True,
                       timeout=300)
    res = subprocess.run(["node", "validate.mjs"], cwd=validate, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 objects valid" in res.stdout


def test_kustomization_renders_every_manifest() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    res = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(res.stdout))
    assert kinds == ["ConfigMap", "Deployment", "PodMonitor", "ScaledObject", "Service"]


def test_manifests_fit_the_worker(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(manifest("configmap.yaml")["data"]["worker.yaml"])
    settings = load_settings(config)  # the mounted settings file is valid
    deployment = manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert port == int(env["EMOTION_WORKER_OBSERVE__PORT"]) == ObserveSettings().port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # the folded model is written there
    assert container["args"][-1] == "/app/config/worker.yaml"
    assert settings.model.watch_thresholds_s > 0  # a ConfigMap edit reaches the thresholds without a restart

    scaled = manifest("scaledobject.yaml")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.kafka.group_id
    assert trigger["metadata"]["topic"] == settings.kafka.input_topic
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    topics = "\n".join(compose["services"]["create-topics"]["command"])
    partitions = int(topics.split(f"{settings.kafka.input_topic}:")[1].split()[0])
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    monitor = manifest("podmonitor.yaml")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
