"""Where kernels run: compiled for the GPU, or under Triton's interpreter on the CPU.

Triton decides between the two when it is imported (``TRITON_INTERPRET``). ``trtjit/__init__`` turns the
interpreter on when it is imported first on a machine without a GPU; this module reports the choice
and turns generated source into launchable kernels.
"""

from __future__ import annotations

import os

from trtjit.errors import EngineError
from trtjit.xc_worker import load_kernel  # noqa: F401  (one loader, shared with the worker script)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(device_type: str) -> None:
    if device_type == "cpu" and not interpreting():
        raise EngineError("inputs are on the CPU, which runs kernels under the Triton interpreter, but Triton "
                          "was imported with the interpreter off; set TRITON_INTERPRET=1 before importing "
                          "triton (trtjit does this itself when imported first on a machine without a GPU), "
                          "or move the inputs to the GPU")
    if device_type not in ("cpu", "cuda"):
        raise EngineError(f"inputs are on a {device_type!r} device; trtjit runs on 'cuda' or 'cpu'")


def ensure_triton_allocator() -> None:
    """Give Triton's JIT an allocator for kernels that need global scratch at launch (device-side TMA
    descriptors), unless the application set one. Stored cubins get theirs from ``trtjit.cuda_launcher``."""
    import torch
    import triton
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
