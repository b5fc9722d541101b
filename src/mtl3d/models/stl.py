"""Single-task learning: an independent encoder + head per task, trained side by side in one run.

The parameter sets are disjoint, so optimising the summed loss with a per-parameter optimiser
(Adam, or SGD without coupling) trains each network as if alone; this gives the Δm references
of a study from one run. Gradient clipping is applied per network to keep them independent.
"""

from __future__ import annotations

from torch import Tensor, nn

from mtl3d.models.base import DenseModel
from mtl3d.models.mtl import MTLBaseline
from mtl3d.models.registry import register_model


@register_model("stl")
class SingleTask(DenseModel):
    """One mtl network per task (own encoder + head), trained side by side: the Δm reference."""

    supports_regularizer = False

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        self.tasks = list(out_channels)
        self.main_tasks = list(self.tasks)
        self.out_channels = dict(out_channels)
        self.nets = nn.ModuleDict(
            {t: MTLBaseline({t: c}, backbone, pretrained, head_channels) for t, c in out_channels.items()}
        )
        first = next(iter(self.nets.values()))
        self.feature_channels = first.feature_channels
        self.feature_strides = first.feature_strides

    def encode(self, image: Tensor) -> dict[str, list[Tensor]]:
        return {t: net.encode(image) for t, net in self.nets.items()}

    def decode(self, features: dict[str, list[Tensor]], size: tuple[int, int]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for t, net in self.nets.items():
            out.update(net.decode(features[t], size))
        return out

    def param_groups_for_clipping(self) -> list[list[nn.Parameter]]:
        return [list(net.parameters()) for net in self.nets.values()]
