"""The settings that only the CUDA path turns on, as one object, so a CPU can run the same code path.

A run on CUDA converts the model and its inputs to channels-last, runs the forward under bf16
autocast, builds fused optimisers and lets cuDNN pick its algorithms. None of that happens on a
CPU run, so bugs that only these settings trigger (a ``.view`` of a channels-last tensor, an op
that refuses bf16) would never be seen without a GPU. ``FastPath.for_device`` is what the trainer
and the evaluator use; ``FastPath.cuda_emulation()`` is the same path on a CPU (everything but
``fused``, which only changes the optimiser's kernel), which the tests and
``benchmarks/gpu_check.py --dry`` run for every model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FastPath:
    channels_last: bool = False
    amp_dtype: torch.dtype | None = None  # autocast dtype of the training forward (None: full precision)
    fused_optimizer: bool = False
    cudnn_benchmark: bool = False
    # torch.compile backend when the config asks for compile; tests pass a counting backend
    compile_backend: Any = "inductor"

    @classmethod
    def for_device(cls, device: torch.device, amp: bool = True) -> FastPath:
        """CUDA: channels-last, bf16 autocast (``amp``), fused optimiser, cuDNN autotuning. Else: none."""
        if device.type != "cuda":
            return cls()
        return cls(
            channels_last=True,
            amp_dtype=torch.bfloat16 if amp else None,
            fused_optimizer=True,
            cudnn_benchmark=True,
        )

    @classmethod
    def cuda_emulation(cls, amp: bool = True, compile_backend: Any = "inductor") -> FastPath:
        """The CUDA path on a CPU: channels-last and bf16 autocast (``torch.autocast("cpu")``)."""
        return cls(
            channels_last=True, amp_dtype=torch.bfloat16 if amp else None, compile_backend=compile_backend
        )

    def autocast(self, device: torch.device, enabled: bool = True) -> AbstractContextManager:
        if self.amp_dtype is None or not enabled:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def module(self, m: nn.Module) -> nn.Module:
        """The model in the path's memory format (in place, like ``Module.to``)."""
        return m.to(memory_format=torch.channels_last) if self.channels_last else m

    def image(self, x: Tensor) -> Tensor:
        """A batch of images in the path's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
