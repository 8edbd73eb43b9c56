"""The node's GPUs: found with ``nvidia-smi``, or given by hand (``farm agent --gpus 0,1``).

The leader gives each chunk that asks for GPUs devices of its own; the agent
hands them to the renderer through ``CUDA_VISIBLE_DEVICES`` (a chunk that asked
for none gets an empty list: it sees no GPU, so two chunks never share one).
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA number the devices as
``nvidia-smi`` does; CUDA's own default order puts the fastest first.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

from farmtui.protocol import GpuInfo

log = logging.getLogger(__name__)

NVIDIA_SMI = "nvidia-smi"
QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
# A driver that hangs must not hold the agent's start for long.
QUERY_TIMEOUT = 10.0

# ``0``, ``0:24576`` (MiB) or ``0:24G``.
_GIVEN = re.compile(r"^(?P<index>\d{1,4})(?::(?P<size>\d+)(?P<unit>[MG]?)(?:i?B)?)?$", re.I)


class GpuListError(ValueError):
    """``--gpus`` could not be read; ``str()`` is one line."""


def detect(command: str = NVIDIA_SMI) -> list[GpuInfo]:
    """The GPUs ``nvidia-smi`` lists; none when it is missing or fails (logged)."""
    path = shutil.which(command)
    if path is None:
        return []
    try:
        done = subprocess.run(
            [path, *QUERY], capture_output=True, text=True, timeout=QUERY_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi did not answer (%s): this node offers no GPU", exc)
        return []
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        log.warning("nvidia-smi failed (%s): this node offers no GPU", first[0] if first else "?")
        return []
    return parse_query(done.stdout)


def parse_query(text: str) -> list[GpuInfo]:
    """``index, name, memory.total`` lines (CSV, no header, no units); bad lines are skipped."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3:
            continue
        index, memory = parts[0], parts[-1]
        name = ", ".join(parts[1:-1])
        if not index.isdigit():
            continue
        try:
            size = int(float(memory))
        except ValueError:
            size = 0  # "[N/A]": known to exist, size unknown
        gpus.append(GpuInfo(index=int(index), name=name[:128], memory=max(0, size)))
    return _checked(gpus)


def parse_given(text: str) -> list[GpuInfo]:
    """``--gpus``: ``0,1``, ``0:24576,1:24576`` (MiB) or ``0:24G``; ``none`` for no GPU."""
    if text.strip().lower() in ("", "none"):
        return []
    gpus: list[GpuInfo] = []
    for item in text.split(","):
        match = _GIVEN.match(item.strip())
        if match is None:
            raise GpuListError(
                f"--gpus: {item.strip()!r} is not INDEX or INDEX:MEMORY (e.g. 0,1 or 0:24G)"
            )
        size = int(match["size"] or 0)
        if (match["unit"] or "").upper() == "G":
            size *= 1024
        gpus.append(GpuInfo(index=int(match["index"]), memory=size))
    try:
        return _checked(gpus)
    except ValueError as exc:
        raise GpuListError(f"--gpus: {exc}") from None


def _checked(gpus: list[GpuInfo]) -> list[GpuInfo]:
    indices = [gpu.index for gpu in gpus]
    if len(set(indices)) != len(indices):
        raise ValueError(f"a GPU index is listed twice in {indices}")
    if len(gpus) > 1024 or any(gpu.index > 1023 for gpu in gpus):
        raise ValueError("GPU indices go from 0 to 1023")
    return sorted(gpus, key=lambda gpu: gpu.index)


def visible_devices(gpus: list[int]) -> dict[str, str]:
    """The environment that gives a renderer exactly ``gpus`` (none: an empty list)."""
    listed = ",".join(str(index) for index in gpus)
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": listed,
        # What the renderer was given, for scripts that want to know.
        "FARMTUI_GPUS": listed,
    }
