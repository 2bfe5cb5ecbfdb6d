"""`emotion-worker check`: what this worker would run with, and whether its cluster, topics, group
and model are there, like `kcat -L` for this worker. Sections are printed as they are checked
(`emit`); a cluster that does not answer is a problem of the report (`unreachable`: the command
then exits 2 with that one line, after the report). `CheckReport` holds everything for `--json`.

Nothing is changed: no topic is created (topics are looked up in the cluster's full topic list,
since asking for one by name creates it where auto-creation is on), no group is joined, nothing
is committed, and the model is only loaded when asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from worker.config import Settings, config_file_of, deprecations, effective_settings
from worker.errors import WorkerError
from worker.ops.brokers import ensure_reachable
from worker.stream.kafka_conf import check_client_configs, consumer_conf

Emit = Callable[[str], None]
SAMPLE_TEXT = "thank you so much, this made my day!"


@dataclass
class CheckReport:
    sections: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # A cluster did not answer (the WorkerError's one line): the command exits 2 after the report.
    unreachable: str | None = None

    def json(self) -> str:
        return orjson.dumps({**self.sections, "problems": self.problems}, option=orjson.OPT_INDENT_2).decode()


def _table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]


class Check:
    def __init__(self, settings: Settings, *, timeout_s: float, load_model: bool, emit: Emit | None) -> None:
        self.settings = settings
        self.k = settings.kafka
        self.timeout_s = timeout_s
        self.load_model = load_model
        self.emit = emit
        self.report = CheckReport()

    def say(self, *lines: str) -> None:
        if self.emit is not None:
            for line in lines:
                self.emit(line)

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def run(self) -> CheckReport:
        self.configuration()
        if self.client_properties():
            found = self.brokers()
            if found is not None:
                input_md, output_md = found
                self.topics(input_md, output_md)
                self.group(input_md)
        self.model()
        self.result()
        return self.report

    # ---- settings -------------------------------------------------------------------------------

    def configuration(self) -> None:
        path = config_file_of(self.settings)
        rows = effective_settings(self.settings)
        deprecated = deprecations(self.settings)  # the lines `run` logs at start
        self.report.sections["configuration"] = {
            "file": str(path) if path is not None else None,
            "settings": [{"key": k, "value": v, "origin": o} for k, v, o in rows],
            "deprecations": deprecated}
        self.say(f"settings (file: {path if path is not None else 'none; defaults and environment'})",
                 *_table([(k, v, o) for k, v, o in rows]), *deprecated, "")

    def client_properties(self) -> bool:
        try:
            check_client_configs(self.settings)
        except WorkerError as exc:
            lines = str(exc).splitlines()
            self.report.sections["client_properties"] = {"ok": False, "errors": lines}
            self.say("client properties: librdkafka refuses them (so the cluster is not checked)",
                     *(f"  {line}" for line in lines), "")
            for line in lines:
                self.problem(line)
            return False
        self.report.sections["client_properties"] = {"ok": True}
        self.say("client properties: librdkafka accepts the consumer and producer configurations", "")
        return True

    # ---- cluster --------------------------------------------------------------------------------

    def _conf(self, servers: str) -> dict[str, Any]:
        conf = consumer_conf(self.k)
        conf.pop("statistics.interval.ms", None)
        conf.pop("stats_cb", None)
        conf.update({"bootstrap.servers": servers, "group.id": f"emotion-worker-check-{uuid.uuid4().hex[:8]}"})
        return conf

    def _admin(self, servers: str) -> AdminClient:
        conf = {k: v for k, v in self._conf(servers).items()
                if k in self.k.common or k in ("bootstrap.servers", "error_cb", "logger")}
        return AdminClient(conf)

    @property
    def output_servers(self) -> str:
        return self.k.output_bootstrap_servers or self.k.bootstrap_servers

    def brokers(self) -> tuple[ClusterMetadata, ClusterMetadata] | None:
        """Each cluster's metadata; None when one did not answer (then the topics and the group
        are not checked, and `report.unreachable` holds the one line)."""
        clusters = {"input": self.k.bootstrap_servers}
        if self.output_servers != self.k.bootstrap_servers:
            clusters["output"] = self.output_servers
        found: dict[str, ClusterMetadata] = {}
        section: dict[str, Any] = {}
        self.report.sections["brokers"] = section
        for role, servers in clusters.items():
            what = "brokers" if role == "input" else "output brokers (kafka.output_bootstrap_servers)"
            label = "brokers" if len(clusters) == 1 else f"{role} brokers"
            try:
                md = ensure_reachable(self._conf(servers), timeout_s=self.timeout_s, what=what)
            except WorkerError as exc:
                section[role] = {"bootstrap_servers": servers, "reachable": False, "error": str(exc)}
                self.report.unreachable = self.report.unreachable or str(exc)
                self.problem(str(exc))
                self.say(f"{label}: {servers} did not answer (so topics and group are not checked)", "")
                return None
            found[role] = md
            brokers = {str(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()}
            section[role] = {"bootstrap_servers": servers, "reachable": True, "cluster_id": md.cluster_id,
                             "controller_id": md.controller_id, "brokers": brokers}
            listed = ", ".join(f"{i} at {a}" for i, a in sorted(brokers.items()))
            self.say(f"{label}: {servers} answered: cluster {md.cluster_id}, {len(brokers)} "
                     f"broker{'s' if len(brokers) != 1 else ''} ({listed})")
        self.say("")
        return found["input"], found.get("output", found["input"])

    def topics(self, input_md: ClusterMetadata, output_md: ClusterMetadata) -> None:
        wanted = [("input", self.k.input_topic, input_md, self.k.bootstrap_servers),
                  ("output", self.k.output_topic, output_md, self.output_servers),
                  ("dead letters", self.k.dead_letter_topic, output_md, self.output_servers)]
        rows, section = [], []
        for role, name, md, servers in wanted:
            topic = md.topics.get(name)
            if topic is None:
                state, partitions = "does not exist", None
                self.problem(f"topic {name} ({role}) does not exist on {servers}")
            elif topic.error is not None:
                state, partitions = f"error: {topic.error.str()}", None
                self.problem(f"topic {name} ({role}) on {servers}: {topic.error.str()}")
            else:
                partitions = len(topic.partitions)
                state = f"{partitions} partition{'s' if partitions != 1 else ''}"
            rows.append((role, name, state))
            section.append({"role": role, "topic": name, "bootstrap_servers": servers, "partitions": partitions,
                            "exists": partitions is not None})
        self.report.sections["topics"] = section
        self.say("topics", *_table(rows), "")

    def group(self, input_md: ClusterMetadata) -> None:
        group, topic = self.k.group_id, self.k.input_topic
        section: dict[str, Any] = {"group_id": group, "topic": topic}
        self.report.sections["group"] = section
        admin = self._admin(self.k.bootstrap_servers)
        lines = [self._members(admin, group, section)]
        md = input_md.topics.get(topic)
        if md is None or md.error is not None:
            lines.append("  lag: the input topic is not there")
        else:
            lines.extend(self._lag(admin, group, topic, sorted(md.partitions), section))
        self.say(f"group {group} on {topic}", *lines, "")

    def _members(self, admin: AdminClient, group: str, section: dict[str, Any]) -> str:
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=self.timeout_s)[group].result(
                timeout=self.timeout_s + 1)
        except (KafkaException, FutureTimeout, NotImplementedError) as exc:
            section["members"] = None
            section["describe_error"] = _reason(exc)
            return f"  members: the brokers did not describe the group ({_reason(exc)})"
        state = getattr(desc.state, "name", str(desc.state)).lower()
        members = [{"client_id": m.client_id, "host": m.host,
                    "partitions": sorted(tp.partition for tp in (m.assignment.topic_partitions if m.assignment
                                                                 else []))} for m in desc.members]
        section.update({"state": state, "members": members})
        if not members:
            note = " (a Stable group with none: the brokers do not list them)" if state == "stable" else ""
            return f"  state {state}, no members{note}"
        listed = "; ".join(f"{m['client_id']} at {m['host']}: partitions "
                           f"{', '.join(map(str, m['partitions'])) or 'none'}" for m in members)
        return f"  state {state}, {len(members)} member{'s' if len(members) != 1 else ''}: {listed}"

    def _lag(self, admin: AdminClient, group: str, topic: str, partitions: list[int],
             section: dict[str, Any]) -> list[str]:
        try:
            request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
            answer = admin.list_consumer_group_offsets([request], request_timeout=self.timeout_s)[group].result(
                timeout=self.timeout_s + 1)
            committed = {tp.partition: tp.offset for tp in answer.topic_partitions if tp.error is None}
        except (KafkaException, FutureTimeout, NotImplementedError) as exc:
            section["lag_error"] = _reason(exc)
            return [f"  lag: the brokers did not give the group's offsets ({_reason(exc)})"]
        consumer = Consumer(self._conf(self.k.bootstrap_servers))
        rows, out = [("partition", "committed", "end", "lag")], []
        try:
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s,
                                                           cached=False)
                done = committed.get(p, -1)
                note = ""
                if done >= 0:
                    lag = high - done
                    if done > high:  # seen with the embedded Tansu broker, whose end offsets lag behind
                        lag, note = None, "committed past the end the brokers report"
                elif self.k.auto_offset_reset == "earliest":
                    lag, note = high - low, "nothing committed: starts at the first record"
                else:
                    lag, note = 0, "nothing committed: starts at the end"
                out.append({"partition": p, "committed": done if done >= 0 else None, "low": low, "end": high,
                            "lag": lag})
                rows.append((str(p), str(done) if done >= 0 else "-", str(high),
                             (str(lag) if lag is not None else "?") + (f"  ({note})" if note else "")))
        except KafkaException as exc:
            section["lag_error"] = _reason(exc)
            return [f"  lag: the brokers did not give the partitions' end offsets ({_reason(exc)})"]
        finally:
            consumer.close()
        section["partitions"] = out
        total = sum(r["lag"] for r in out if r["lag"] is not None)
        section["total_lag"] = total
        return [*_table(rows), f"  total lag {total}"]

    # ---- model ----------------------------------------------------------------------------------

    def model(self) -> None:
        from worker.errors import ModelError
        from worker.model_choice import choose_models
        from worker.providers_check import check_providers

        ms = self.settings.model
        section: dict[str, Any] = {"embedder": ms.embedder, "head": ms.head, "loaded": False}
        self.report.sections["model"] = section
        try:
            choice = choose_models(ms)
        except (ModelError, WorkerError) as exc:
            section["error"] = str(exc)
            self.problem(f"model: {exc}")
            self.say("model", f"  {exc}", "")
            return
        section.update({"embedder": choice.embedder, "head": choice.head, "description": choice.description})
        lines = [f"  {choice.description}"]
        try:
            check_providers(self.settings)
        except WorkerError as exc:
            section["error"] = str(exc)
            self.problem(str(exc))
            lines.append(f"  {exc}")
        for kind, ref, need in (("embedder", choice.embedder, _embedder_files),
                                ("head", choice.head, _head_files)):
            found, missing = need(ref)
            section[f"{kind}_files"] = {"present": found, "missing": missing}
            state = "all files present" if not missing else f"MISSING {', '.join(missing)}"
            lines.append(f"  {kind} {ref}: {state}" + (f" ({', '.join(found)})" if found and not missing else ""))
            if missing:
                self.problem(f"model {kind} {ref}: missing {', '.join(missing)}")
        if ms.thresholds_file is not None and not Path(ms.thresholds_file).is_file():
            self.problem(f"model.thresholds_file {ms.thresholds_file} does not exist")
            lines.append(f"  thresholds file {ms.thresholds_file}: MISSING")
        model_problem = "error" in section or any(p.startswith("model") for p in self.report.problems)
        if self.load_model and not model_problem:
            lines.append(self._load(section))
        elif not self.load_model:
            lines.append("  not loaded (--load-model loads it and classifies one text)")
        self.say("model", *lines, "")

    def _load(self, section: dict[str, Any]) -> str:
        from worker.app import load_engine

        start = time.monotonic()
        try:
            engine = load_engine(self.settings)
            result = engine.classify([SAMPLE_TEXT])[0]
        except WorkerError as exc:
            section["error"] = str(exc)
            self.problem(f"model: {exc}")
            return f"  loading failed: {exc}"
        seconds = time.monotonic() - start
        labels = ", ".join(f"{lab} {result.scores[lab]:.2f}" for lab in result.labels) or "(no label)"
        section.update({"loaded": True, "load_seconds": round(seconds, 2), "sample": SAMPLE_TEXT,
                        "sample_labels": result.labels})
        return f"  loaded in {seconds:.1f} s; {SAMPLE_TEXT!r} -> {labels}"

    # ---- verdict --------------------------------------------------------------------------------

    def result(self) -> None:
        n = len(self.report.problems)
        if not n:
            self.say("result: all good")
            return
        self.say(f"result: {n} problem{'s' if n != 1 else ''}", *(f"  - {p}" for p in self.report.problems))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return str(err.str()) if hasattr(err, "str") else str(err)
    if isinstance(exc, FutureTimeout):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _local_dir(ref: str) -> Path | None:
    """The model's directory: a path, or a hub id already in the local Hugging Face cache (nothing
    is downloaded)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    from worker.engine.resolve import looks_like_hub_id

    if not looks_like_hub_id(ref):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=ref, local_files_only=True))
    except Exception:  # not cached (or no hub library): said as "not found locally"
        return None


def _embedder_files(ref: str) -> tuple[list[str], list[str]]:
    d = _local_dir(ref)
    if d is None:
        return [], ["the directory (not a local directory, nor in the Hugging Face cache)"]
    encoder = next((f for f in ("model.onnx", "onnx/model.onnx") if (d / f).is_file()), None)
    found = [f for f in (encoder, "tokenizer.json") if f is not None and (d / f).is_file()]
    missing = [] if encoder else ["model.onnx (or onnx/model.onnx)"]
    if not (d / "tokenizer.json").is_file() and not (d / "vocab.txt").is_file():
        missing.append("tokenizer.json")
    return found, missing


def _head_files(ref: str) -> tuple[list[str], list[str]]:
    d = _local_dir(ref)
    if d is None:
        return [], ["the directory (not a local directory, nor in the Hugging Face cache)"]
    names = ("model.onnx", "thresholds.json")
    return [n for n in names if (d / n).is_file()], [n for n in names if not (d / n).is_file()]


def run_check(settings: Settings, *, timeout_s: float, load_model: bool = False,
              emit: Emit | None = None) -> CheckReport:
    return Check(settings, timeout_s=timeout_s, load_model=load_model, emit=emit).run()

