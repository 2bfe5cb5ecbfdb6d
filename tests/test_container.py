"""The image, built and run for real with podman (as root) against the embedded broker: non-root,
health and readiness, metrics, results and dead letters, the image's health check, SIGTERM within
the grace period, a read-only root filesystem. Skipped, saying why, only where podman cannot run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator

import orjson
import pytest

from testkit.kafka import HEARTBEAT_INTERVAL_MS, ROOT, SESSION_TIMEOUT_MS, Topics, produce, read_all
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker, free_port

IMAGE = os.environ.get("EMOTION_WORKER_TEST_IMAGE", "localhost/emotion-worker:test")

# runc (crun fails on this host's cgroups) and explicit limits (podman's defaults are refused here).
RUN_OPTS = ["--runtime", "runc", "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]
GRACE_S = 40
MAX_IMAGE_MB = 450
pytestmark = pytest.mark.container


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the container test runs podman as root; run the tests as root"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and apt-get is not there to install it"
    return None


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("w") as out:
        res = subprocess.run([str(ROOT / "scripts" / "container-image")], cwd=ROOT, stdout=out,
                             stderr=subprocess.STDOUT, env={**os.environ, "IMAGE": IMAGE}, timeout=3000)
    text = log.read_text(errors="replace")
    if res.returncode == 3:
        pytest.skip(text.strip().splitlines()[-1])
    assert res.returncode == 0, text[-4000:]
    print(text.strip().splitlines()[-1])
    return IMAGE


def container_logs(name: str) -> str:
    res = podman("logs", name, check=False)
    return res.stdout + res.stderr


def http(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_status(port: int, path: str, timeout: float) -> int:
    status = 0

    def ok() -> bool:
        nonlocal status
        status = http(port, path)[0]
        return status == 200

    wait_until(ok, timeout, interval=0.1)
    return status


@pytest.fixture()
def container(image: str, broker: LocalBroker) -> Iterator[tuple[str, int, Topics]]:
    topics = Topics.fresh(broker, partitions=2)
    port = free_port()
    name = f"emotion-worker-test-{uuid.uuid4().hex[:8]}"
    env = {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
           "EMOTION_WORKER_KAFKA__INPUT_TOPIC": topics.input, "EMOTION_WORKER_KAFKA__OUTPUT_TOPIC": topics.output,
           "EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC": topics.dlq, "EMOTION_WORKER_KAFKA__GROUP_ID": topics.group,
           "EMOTION_WORKER_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
           "EMOTION_WORKER_KAFKA__CONSUMER": f'{{"heartbeat.interval.ms": {HEARTBEAT_INTERVAL_MS}}}',
           "EMOTION_WORKER_OBSERVE__HOST": "127.0.0.1",
           "EMOTION_WORKER_OBSERVE__PORT": str(port)}
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    # --network host: the broker listens on this machine's loopback only. --read-only: the root
    # filesystem cannot be written (podman mounts a tmpfs on /tmp).
    podman("run", "-d", "--name", name, *RUN_OPTS, "--network", "host", "--read-only", *env_args, image)
    try:
        yield name, port, topics
    finally:
        logs = container_logs(name)
        podman("rm", "-f", name, check=False)
        (ROOT / ".cache").mkdir(exist_ok=True)
        (ROOT / ".cache" / "container-test.log").write_text(logs)


def test_image_is_lean(image: str) -> None:
    size_mb = int(podman("image", "inspect", "-f", "{{.Size}}", image).stdout) / 1e6
    assert size_mb <= MAX_IMAGE_MB, f"image is {size_mb:.0f} MB"
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "torch" not in podman("run", "--rm", *RUN_OPTS, "--entrypoint", "pip", image, "list").stdout
    assert "HEALTHCHECK" in history or podman("inspect", "-f", "{{.Config.Healthcheck}}", image).stdout.strip()


def test_container_runs_as_non_root_and_serves_the_stream(container: tuple[str, int, Topics],
                                                          broker: LocalBroker) -> None:
    name, port, topics = container
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert wait_status(port, "/healthz", 180) == 200, container_logs(name)[-3000:]
    assert wait_status(port, "/readyz", 90) == 200, http(port, "/readyz")
    status, metrics = http(port, "/metrics")
    assert status == 200 and b"emotion_worker_messages_consumed_total" in metrics

    good = [(f"k{i}".encode(), orjson.dumps({"id": f"c{i}", "text": f"thank you so much, friend {i}!"}), [])
            for i in range(20)]
    produce(broker.bootstrap, topics.input, [*good, (b"bad", b"{not json", [])])
    outputs = read_all(broker.bootstrap, topics.output, expect=20, timeout=90)
    assert sorted(orjson.loads(m.value())["id"] for m in outputs) == sorted(f"c{i}" for i in range(20))
    dead = read_all(broker.bootstrap, topics.dlq, expect=1, timeout=30)
    assert [dict(m.headers() or [])["emotion-worker.error.class"] for m in dead] == [b"invalid_json"]

    health = podman("healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr

    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), name, timeout=GRACE_S + 30)
    took = time.monotonic() - started
    state = podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
    assert state == "0" and took < GRACE_S, (state, took)
    logs = container_logs(name)
    assert "Traceback" not in logs and "telemetry" not in logs.lower(), logs[-3000:]
    assert "stopped" in logs
