"""How each benchmark script ends: a mistake a user can make (a missing data file or model, an
unreachable broker) is one line on stderr and exit 2, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from worker.errors import WorkerError


def run(main: Callable[[], int | None]) -> NoReturn:
    try:
        code = main()
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
