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

import msgspec

from farmtui.printable import CONTROL_CHARACTERS
from farmtui.protocol import MAX_NODE_GPUS, GpuInfo

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
            [path, *QUERY],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=QUERY_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi did not answer (%s): this node offers no GPU", exc)
        return []
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        said = _CONTROL.sub("?", first[0])[:200] if first else "?"
        log.warning("nvidia-smi failed (%s): this node offers no GPU", said)
        return []
    return parse_query(done.stdout)


_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def parse_query(text: str) -> list[GpuInfo]:
    """``index, name, memory.total`` lines (CSV, no header, no units).

    A line that does not describe a GPU the leader would take (no index, an
    index seen before or out of range, an absurd size) is skipped with a warning:
    a driver's odd output costs that GPU, never the node.
    """
    gpus: list[GpuInfo] = []
    seen: set[int] = set()
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        index, memory = int(parts[0]), parts[-1]
        name = _CONTROL.sub("?", ", ".join(parts[1:-1]))[:128]
        try:
            size = max(0, int(float(memory)))
        except (ValueError, OverflowError):
            size = 0  # "[N/A]": known to exist, size unknown
        try:
            gpu = msgspec.convert({"index": index, "name": name, "memory": size}, GpuInfo)
        except msgspec.ValidationError as exc:
            log.warning("nvidia-smi: skipping GPU line %r (%s)", _CONTROL.sub("?", line)[:200], exc)
            continue
        if index in seen:
            log.warning("nvidia-smi: GPU %d is listed twice; keeping the first", index)
            continue
        seen.add(index)
        gpus.append(gpu)
        if len(gpus) == MAX_NODE_GPUS:
            break
    return sorted(gpus, key=lambda gpu: gpu.index)


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
        try:
            gpus.append(msgspec.convert({"index": int(match["index"]), "memory": size}, GpuInfo))
        except msgspec.ValidationError:
            raise GpuListError(
                f"--gpus: {item.strip()!r}: indices go from 0 to 1023, memory up to 16T"
            ) from None
    indices = [gpu.index for gpu in gpus]
    if len(set(indices)) != len(indices):
        raise GpuListError(f"--gpus: a GPU index is listed twice in {text.strip()!r}")
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
