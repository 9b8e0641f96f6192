"""Fault injection for the tests of interruption safety.

With ``GE2MST_FAULT=kind:N`` in the environment, the process kills itself with SIGKILL (as a
power cut or an out-of-memory kill would) at the N-th point of that kind: ``step`` (after an
optimizer step) or ``save`` (an atomic write, after the temporary file is on disk and before it
replaces the target). Without the variable nothing happens.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_counts: Counter[str] = Counter()


def fault_point(kind: str, count: int | None = None) -> None:
    """Die here if GE2MST_FAULT names this point (``count`` defaults to a per-kind counter)."""
    spec = os.environ.get("GE2MST_FAULT")
    if not spec:
        return
    if count is None:
        _counts[kind] += 1
        count = _counts[kind]
    if spec == f"{kind}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
