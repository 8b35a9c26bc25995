"""Device selection shared by the torch stages."""

from __future__ import annotations

import torch

from edgekd import EdgekdError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda', 'cuda:N' are checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EdgekdError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EdgekdError(f"--device {device} asked for CUDA but no GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EdgekdError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev


def autocast(device: torch.device):
    """bf16 autocast on GPU, a no-op (fp32) on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
