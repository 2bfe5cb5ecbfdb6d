"""Where settings come from: the YAML file (with the line of every key) and EMOTION_WORKER_*
environment variables (each mapped to the setting it names), before validation.

Both produce plain nested dicts plus an `Origin` for every leaf they set, so a validation error
or a startup log line can say which file line or which variable a value came from.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from worker.errors import ConfigError

ENV_PREFIX = "EMOTION_WORKER_"
# EMOTION_WORKER_* variables that are not settings: the config file's path, and the developer
# tools' (the local broker binary, the container test's image).
OTHER_VARIABLES = frozenset({"EMOTION_WORKER_CONFIG", "EMOTION_WORKER_TANSU", "EMOTION_WORKER_NOIDA_DB",
                             "EMOTION_WORKER_TEST_IMAGE"})

Path_ = tuple[str | int, ...]

# Mappings of librdkafka properties: their names have dots, never underscores, so in a variable's
# NAME (where a shell allows no dots) '_' stands for '.'. Keys in the file or in a JSON value are
# used as written.
DOTTED_KEYS = frozenset({("kafka", "common"), ("kafka", "consumer"), ("kafka", "producer")})


@dataclass(frozen=True)
class Origin:
    """Where one setting's value came from."""

    kind: Literal["default", "file", "env", "option", "demo"]
    name: str = ""  # the file's path, the variable's name, the option (demo: what it set up)
    line: int | None = None  # the file line

    def __str__(self) -> str:
        return "default" if self.kind == "default" else f"{self.kind} {self.name}"

    def where(self) -> str:
        """For an error message: 'EMOTION_WORKER_X', '/x/c.yaml line 3'."""
        if self.kind == "file":
            return f"{self.name} line {self.line}" if self.line else self.name
        return self.name


DEFAULT = Origin("default")


def _leaves(value: Any, path: Path_) -> Iterator[Path_]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, (*path, str(key)))
    else:
        yield path


# ---- the file ----------------------------------------------------------------------------------


def _key_lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            out[sub] = key.start_mark.line + 1
            _key_lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _key_lines(item, (*path, i), out)


def _duplicate_key(node: yaml.Node, path: Path_) -> str | None:
    """'line 7: kafka is set twice (first at line 1) ...' for the first key that a mapping (at any
    level) holds twice, else None. YAML loaders keep the last silently: a whole section could vanish."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged, not a key
                continue
            name, line = str(key.value), key.start_mark.line + 1
            dotted = ".".join(str(p) for p in (*path, name))
            if name in first:
                return (f"line {line}: {dotted} is set twice (first at line {first[name]}); only the last would "
                        "count: merge the two into one")
            first[name] = line
            found = _duplicate_key(value, (*path, name))
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, i))
            if found is not None:
                return found
    return None


_KIND_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list"}


@dataclass
class FileValues:
    path: Path
    data: dict[str, Any]
    lines: dict[Path_, int]  # the line of every key and list item

    def origin(self, path: Path_) -> Origin:
        """The origin of `path` or of the nearest enclosing key the file sets."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return Origin("file", str(self.path), self.lines[path[:n]])
        return Origin("file", str(self.path))


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """' line N: not valid YAML: ...': for an unclosed '[' or '{' the line where it was opened (the
    parser notices only lines later), otherwise where the parser stopped."""
    found, began, context = exc.problem_mark, exc.context_mark, exc.context or ""
    if began is not None and ("flow" in context or found is None):
        later = f" (at line {found.line + 1} column {found.column + 1})" if found and found.line != began.line else ""
        return f" line {began.line + 1}: not valid YAML: {context}, {exc.problem}{later}"
    at = f" line {found.line + 1} column {found.column + 1}" if found is not None else ""
    if "'\\t'" in str(exc.problem):
        return f"{at}: not valid YAML: a tab character; indent with spaces"
    since = f" ({context} from line {began.line + 1})" if began is not None and context else ""
    return f"{at}: not valid YAML: {exc.problem}{since}"


def read_file(path: Path) -> FileValues:
    """The YAML file's values, or ConfigError naming the file and line of a syntax error."""
    shown = path.absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {shown}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                          f"{exc.start}): is it the settings file?") from None
    except OSError as exc:
        raise ConfigError(f"config: {shown}: cannot read it: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"config: {shown}{_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {shown}: not valid YAML: {exc}") from None
    if data is None:  # an empty file (or only comments): all defaults
        data = {}
    if not isinstance(data, dict):
        kind = _KIND_NAMES.get(type(data), type(data).__name__)
        raise ConfigError(f"config: {shown}: the file must be a mapping of sections (kafka:, model:, ...), "
                          f"not {kind}")
    lines: dict[Path_, int] = {}
    if node is not None:
        duplicate = _duplicate_key(node, ())
        if duplicate is not None:
            raise ConfigError(f"config: {shown} {duplicate}")
        _key_lines(node, (), lines)
    return FileValues(shown, data, lines)


def file_origins(values: FileValues) -> dict[Path_, Origin]:
    return {leaf: values.origin(leaf) for leaf in _leaves(values.data, ())}


# ---- the environment ---------------------------------------------------------------------------


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def setting_names(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every section and field path of `model`: ('kafka',), ('kafka', 'bootstrap_servers'), ..."""
    for name, field in model.model_fields.items():
        yield (*path, name)
        annotation, _ = _optional(field.annotation)
        if _is_model(annotation):
            yield from setting_names(annotation, (*path, name))


def variable_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


@dataclass(frozen=True)
class _Target:
    path: tuple[str, ...]
    kind: Literal["model", "dict", "list", "scalar"]
    optional: bool


def _resolve(model: type[BaseModel], parts: list[str]) -> _Target | None:
    """The setting a variable's name (split at '__', lower case) points to, or None."""
    path: tuple[str, ...] = ()
    current: type[BaseModel] = model
    for i, part in enumerate(parts):
        field = current.model_fields.get(part)
        if field is None or not part:
            return None
        path = (*path, part)
        annotation, optional = _optional(field.annotation)
        rest = parts[i + 1:]
        if _is_model(annotation):
            if not rest:
                return _Target(path, "model", optional)
            current = annotation
            continue
        if typing.get_origin(annotation) is dict:
            # EMOTION_WORKER_KAFKA__COMMON__SASL_PASSWORD: the rest is the key (lower case, as
            # librdkafka's properties are)
            if not rest:
                return _Target(path, "dict", optional)
            key = "__".join(rest)
            if path in DOTTED_KEYS:  # a shell cannot export a name with dots: sasl_password is sasl.password
                key = key.replace("_", ".")
            return _Target((*path, key), "scalar", False)
        if rest:
            return None
        return _Target(path, "list" if typing.get_origin(annotation) is list else "scalar", optional)
    return None


def _suggest(name: str, model: type[BaseModel]) -> str:
    candidates = {variable_name(p)[len(ENV_PREFIX):]: variable_name(p) for p in setting_names(model)}
    candidates.update({v[len(ENV_PREFIX):]: v for v in OTHER_VARIABLES})
    close = difflib.get_close_matches(name[len(ENV_PREFIX):].upper(), list(candidates), n=1, cutoff=0.6)
    if close:
        return f"did you mean {candidates[close[0]]}?"
    return ("variables are EMOTION_WORKER_<SECTION>__<FIELD>, e.g. EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS "
            "(config/worker.yaml lists the settings)")


def _parse(target: _Target, raw: str, var: str) -> Any:
    """The variable's text as the setting's value: JSON for sections and mappings; for lists
    JSON, comma-separated or a single bare value; 'null' for settings that may be empty."""
    if target.optional and raw.strip().lower() in {"null", "none"}:
        return None
    if target.kind in {"model", "dict"}:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            hint = (f", or one variable a key: {var}__<KEY>" if target.kind == "dict" else
                    f", or one variable a field: {var}__<FIELD>")
            raise ValueError(f"{var}: expects a JSON object, e.g. {{\"key\": \"value\"}}{hint}")
        return value
    if target.kind == "list":
        if raw.lstrip().startswith("["):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueError(f"{var}: not a valid JSON list; or write the items comma-separated: "
                                 "A,B") from None
            return value
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    return dict(nested)


@dataclass
class EnvValues:
    data: dict[str, Any]
    origins: dict[Path_, Origin]
    problems: list[str]


def read_environment(model: type[BaseModel], environ: Mapping[str, str]) -> EnvValues:
    """The settings EMOTION_WORKER_<SECTION>__<FIELD> variables set (any case). A variable that
    names no setting, or a value that cannot be read as its setting's kind, is a problem line."""
    data: dict[str, Any] = {}
    origins: dict[Path_, Origin] = {}
    problems: list[str] = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES:
            continue
        target = _resolve(model, var[len(ENV_PREFIX):].lower().split("__"))
        if target is None:
            problems.append(f"config: {var}: no such setting; {_suggest(var, model)}")
            continue
        try:
            value = _parse(target, environ[var], var)
        except ValueError as exc:
            problems.append(f"config: {exc}")
            continue
        deep_merge(data, _nest(target.path, value))
        for leaf in _leaves(value, target.path):
            origins[leaf] = Origin("env", var)
    return EnvValues(data, origins, problems)


def deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """`other` over `into`, mappings merged key by key (in place)."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into
