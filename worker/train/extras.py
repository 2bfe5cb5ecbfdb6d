"""The optional packages the training commands need, checked before they start their work: one line
naming what is missing instead of an ImportError after minutes of embedding or training."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from worker.errors import WorkerError

# module -> the distribution to name to the user
DISTRIBUTIONS = {"sklearn": "scikit-learn", "optimum.exporters.onnx": "optimum-onnx"}
TRAIN_HEAD_MODULES = ("sklearn",)
FINE_TUNE_MODULES = ("torch", "transformers", "peft", "optimum.exporters.onnx")  # train, and export at the end
INSTALL = "install a CPU torch, then pip install -c constraints.txt '.[{extras}]' in the source checkout " \
          "(README: Running the worker)"


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The distributions of the `modules` that cannot be imported."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module without a spec
            found = False
        if not found:
            missing.append(DISTRIBUTIONS.get(name, name))
    return missing


def require_extras(command: str, extras: Sequence[str], modules: Sequence[str]) -> None:
    """Raise one line if any of `modules` is missing: `command` needs the `extras`."""
    missing = missing_modules(modules)
    if missing:
        names = " and ".join(f"'{e}'" for e in extras)
        raise WorkerError(f"{command} needs the {names} extra{'s' if len(extras) > 1 else ''} "
                          f"({', '.join(missing)} not installed): {INSTALL.format(extras=','.join(extras))}")
