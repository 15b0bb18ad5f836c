"""DDP plumbing shared by the training loop and the evaluation: process-group setup
(device bound before any collective), the device collectives run on, and the
per-rank gather of small Python objects (RNG states for checkpoints).

NCCL reduces CUDA tensors only, and each rank must have selected its own GPU
before the first collective (otherwise every rank touches GPU 0). So the device
is set before ``init_process_group``, and every collective tensor is placed by
:func:`collective_device` (the model's device: CUDA under NCCL, the CPU under gloo).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA training, gloo for CPU training (also when a GPU is present but unused)."""
    return "nccl" if device.type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    """The env:// rendezvous variables torchrun sets (also for ``--nproc_per_node 1``)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def setup(device: torch.device) -> tuple[int, int, int, torch.device]:
    """``(rank, world, local_rank, device)`` from the torchrun environment. Under torchrun (any world size,
    so a 1-GPU torchrun runs the same collectives as a multi-GPU one) or with ``WORLD_SIZE > 1`` a process
    group is created; a CUDA device becomes ``cuda:LOCAL_RANK`` and is selected *before* the group exists."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    grouped = world > 1 or launched_by_torchrun()
    if grouped and device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if grouped and not dist.is_initialized():
        dist.init_process_group(backend_for(device))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, local, device


def barrier(device: torch.device) -> None:
    if active():
        if device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[device.index if device.index is not None else torch.cuda.current_device()])
        else:
            dist.barrier()


def collective_device(model_or_device) -> torch.device:
    """Where collective tensors live: the model's device (a module, or a device given directly)."""
    if isinstance(model_or_device, torch.device):
        return model_or_device
    if isinstance(model_or_device, str):
        return torch.device(model_or_device)
    param = next(model_or_device.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (rank order) - ``[obj]`` without a process group."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
