"""What a figure needs beside it: the commit and version of the code, torch, the device, the
threads and the start time of the run."""

from __future__ import annotations

from pathlib import Path

import torch


def _git_commit() -> str | None:
    """The commit of the ge2mst checkout this code runs from, or None (an installed package)."""
    import subprocess

    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), else the platform's
    processor or machine name."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def provenance(device: torch.device) -> dict:
    """What a figure needs beside it: the code's commit and version, torch, the device, the
    threads and the start time of the run (recorded when a run starts)."""
    import platform
    from datetime import UTC, datetime
    from importlib.metadata import PackageNotFoundError, version

    try:
        ge2mst_version = version("ge2mst")
    except PackageNotFoundError:  # pragma: no cover - a bare source tree
        ge2mst_version = None
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    return {"commit": _git_commit(), "ge2mst_version": ge2mst_version, "torch": str(torch.__version__),
            "device_name": name, "started": datetime.now(UTC).isoformat(timespec="seconds")}


__all__ = ["cpu_model", "provenance"]
