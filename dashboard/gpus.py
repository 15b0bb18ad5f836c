"""The GPUs the dashboard may place training jobs on: index, name, memory total and in use.

The scheduler (``dashboard.scheduler``) takes any callable returning a list of
``GPU``; the default, ``GpuInventory``, asks ``nvidia-smi --query-gpu`` (an
argument list, a few seconds' timeout) and falls back to ``torch.cuda``
(``mem_get_info`` creates a CUDA context on each GPU, so it is only the fallback).
A CPU-only machine has an empty inventory. Results are cached a few seconds: the
Train tab asks on every timer tick.

``GPU.index`` is what users see and pick (0, 1, ...: the order of the GPUs the
dashboard itself sees); ``GPU.visible_id`` is what a child's
``CUDA_VISIBLE_DEVICES`` must hold to give it that GPU - the physical index, or
the entry of the dashboard's own ``CUDA_VISIBLE_DEVICES`` when the operator set one.
Children also get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``CHILD_ENV``), the order
nvidia-smi numbers GPUs in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CHILD_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
QUERY = ("index", "uuid", "name", "memory.total", "memory.used")
MIB = 1024 * 1024


@dataclass(frozen=True)
class GPU:
    index: int              # the dashboard's number for it (what the form and the queue name)
    name: str
    total_mb: int | None
    used_mb: int | None
    visible_id: str         # the value for a child's CUDA_VISIBLE_DEVICES

    def memory_text(self) -> str:
        if self.total_mb is None:
            return "memory unknown"
        used = "?" if self.used_mb is None else f"{self.used_mb / 1024:.1f}"
        return f"{used}/{self.total_mb / 1024:.1f} GiB used"


def parse_visible(text: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries (indices or UUIDs); None when unset (every GPU visible)."""
    if text is None:
        return None
    return [e.strip() for e in text.split(",") if e.strip()]


def parse_nvidia_smi(text: str, visible: list[str] | None = None) -> list[GPU]:
    """Rows of ``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits``,
    restricted to (and ordered as) ``visible`` when the dashboard runs under a CUDA_VISIBLE_DEVICES."""
    rows = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(QUERY) or not parts[0].isdigit():
            continue
        idx, uuid, name, total, used = parts
        rows[idx] = (uuid, name, _mib(total), _mib(used))
    if visible is None:
        order = [(idx, idx) for idx in sorted(rows, key=int)]
    else:
        by_uuid = {r[0]: idx for idx, r in rows.items()}
        order = [(e, e if e in rows else by_uuid.get(e)) for e in visible]
        order = [(e, idx) for e, idx in order if idx is not None]
    return [GPU(i, rows[idx][1], rows[idx][2], rows[idx][3], entry) for i, (entry, idx) in enumerate(order)]


def _mib(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def query_nvidia_smi(timeout_s: float = 5.0) -> list[GPU] | None:
    """The GPUs nvidia-smi reports (None when there is no nvidia-smi or it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return parse_nvidia_smi(out.stdout, parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES")))


def query_torch() -> list[GPU]:
    """The GPUs torch sees (after the dashboard's own CUDA_VISIBLE_DEVICES); empty without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        visible = parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
        out = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            entry = visible[i] if visible and i < len(visible) else str(i)
            out.append(GPU(i, torch.cuda.get_device_name(i), total // MIB, (total - free) // MIB, entry))
        return out
    except (RuntimeError, AssertionError):
        return []


class GpuInventory:
    """The machine's GPUs, asked at most every ``ttl_s`` seconds (nvidia-smi first, else torch.cuda)."""

    def __init__(self, ttl_s: float = 5.0, query: Callable[[], list[GPU]] | None = None):
        self.ttl_s = ttl_s
        self._query = query or (lambda: query_nvidia_smi() if shutil.which("nvidia-smi") else query_torch())
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GPU]] | None = None

    def __call__(self) -> list[GPU]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.ttl_s:
                found = self._query()
                if found is None:  # nvidia-smi present but failing: what torch sees
                    found = query_torch()
                self._cached = (now, list(found))
            return list(self._cached[1])


def fixed(gpus: list[GPU]) -> Callable[[], list[GPU]]:
    """An inventory that always answers ``gpus`` (tests; a machine described by hand)."""
    return lambda: list(gpus)


def label(gpu: GPU, job: str | None = None) -> str:
    """How the Train form lists a GPU: index, name, memory in use, and this dashboard's job on it."""
    return f"GPU {gpu.index} · {gpu.name} · {gpu.memory_text()} · " + (f"job: {job}" if job else "free")
