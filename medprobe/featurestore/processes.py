"""Whether a process that wrote a lock or a run record is still alive (on this host)."""

from __future__ import annotations

import os
import socket


def process_gone(host: str | None, pid: int | None) -> bool:
    """True when ``pid`` on ``host`` has certainly exited: it ran on this host and no such process lives now."""
    if pid is None or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
