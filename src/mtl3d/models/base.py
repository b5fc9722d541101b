"""The model contract: ``encode(image) -> features``, ``decode(features, size) -> {task: logits}``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class DenseModel(nn.Module):
    """Base class of every multi-task model.

    ``feature_channels`` / ``feature_strides`` describe what ``encode`` returns, which is all a
    training-only branch (the 3D-aware regularizer) needs to plug in.
    """

    tasks: list[str]
    out_channels: dict[str, int]
    feature_channels: list[int]
    feature_strides: list[int]
    supports_regularizer: bool = True

    def encode(self, image: Tensor) -> Any:
        raise NotImplementedError

    def decode(self, features: Any, size: tuple[int, int]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.decode(self.encode(image), tuple(image.shape[-2:]))
