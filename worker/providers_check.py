"""model.providers against onnxruntime, before anything starts: a name onnxruntime does not know is
a settings error (with the closest name); a known one this build lacks is refused by `run`,
`classify` and `check` before the model loads (other commands do not need it). onnxruntime is
imported only here, and only when the providers differ from the default."""

from __future__ import annotations

import difflib

from worker.config import Settings, config_line, origins_of
from worker.errors import ConfigError

SUFFIX = "ExecutionProvider"


def _closest(name: str, known: list[str]) -> str | None:
    by_lower = {k.lower(): k for k in known}
    wanted = name.strip().lower()
    if wanted + SUFFIX.lower() in by_lower:  # `cuda`: CUDAExecutionProvider
        return by_lower[wanted + SUFFIX.lower()]
    close = difflib.get_close_matches(wanted, list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def known_names(names: list[str]) -> list[str]:
    """`names` as onnxruntime spells them (in any case: cpuexecutionprovider), or ValueError naming
    the first it does not know, with the closest name it does."""
    import onnxruntime as ort

    known = list(ort.get_all_providers())
    by_lower = {k.lower(): k for k in known}
    spelt = []
    for name in names:
        if name.strip().lower() in by_lower:
            spelt.append(by_lower[name.strip().lower()])
            continue
        closest = _closest(name, known)
        hint = (f"did you mean {closest}?" if closest is not None
                else f"this onnxruntime build has {', '.join(ort.get_available_providers())}")
        raise ValueError(f"unknown execution provider {name!r}; {hint}")
    return spelt


def missing_from_build(names: list[str]) -> str | None:
    """What to say when this onnxruntime build lacks some of `names`, else None."""
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    missing = [n for n in names if n not in available]
    if not missing:
        return None
    install = ("onnxruntime-gpu with a matching CUDA runtime" if any("CUDA" in n or "Tensorrt" in n for n in missing)
               else "an onnxruntime build that has it")
    return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this onnxruntime build (it has "
            f"{', '.join(available)}): install {install}, or set model.providers to [CPUExecutionProvider]")


def check_providers(settings: Settings) -> None:
    """ConfigError (one line naming where model.providers was set) when this onnxruntime build
    lacks a provider the settings name. Called before the model loads and before `run` starts."""
    problem = missing_from_build(settings.model.providers)
    if problem is not None:
        raise ConfigError(config_line(("model", "providers"), problem, origins_of(settings)))
