"""Run ``medprobe ARGS`` and SIGKILL this process right after its K-th table fragment is written (K = argv[1]).

Used by the kill tests: every fragment write is a step at which a real kill could land.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    k = int(sys.argv[1])
    from medprobe.cli.main import main as medprobe
    from medprobe.featurestore import store as store_module

    real = store_module.append_fragment
    count = {"n": 0}

    def append_then_maybe_die(*args: object, **kwargs: object) -> str:
        path = real(*args, **kwargs)  # type: ignore[arg-type]
        count["n"] += 1
        if count["n"] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    store_module.append_fragment = append_then_maybe_die  # type: ignore[assignment]
    medprobe(sys.argv[2:])


if __name__ == "__main__":
    main()
