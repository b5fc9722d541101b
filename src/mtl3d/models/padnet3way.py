"""3-ways PAD-Net as implemented in DenseMTL (``models/padnetplus.py``).

Released code: github.com/astra-vision/DenseMTL. ResNet dilated to output stride 16, per-task U-Net
decoders (:mod:`mtl3d.models.unet_decoder`) and one PAD-Net distillation block at 1/4 resolution;
docs/models.md has the recipe and where we differ.
"""

from __future__ import annotations

from mtl3d.models.blocks import MultiModalDistillation
from mtl3d.models.registry import register_model
from mtl3d.models.unet_decoder import DECODER_CHANNELS, UNetMultiTask

# The released model splits the decoder after scale 2 (1/4 resolution): ``enc_1st_layers=[4, 3, 2]``.
PADNET_SCALE = 2


@register_model("padnet3way")
class ThreeWayPADNet(UNetMultiTask):
    """3-ways PAD-Net (DenseMTL's version): dilated ResNet, per-task U-Net decoders, PAD-Net block at 1/4.

    Encoder at output stride 16 (``output_stride``; ``None`` = undilated), one
    :class:`~mtl3d.models.unet_decoder.UNetDecoder` per task; after scale 2 (1/4 resolution) the
    features of every task are refined by PAD-Net's multi-modal distillation
    ``f̃_t = f_t + Σ_{a≠t} SA_{a→t}(f_a)`` (all tasks are targets and sources; width = the decoder's
    width at that scale, 128 by default as the code's hard-coded value). There is no supervised
    prediction before the block: the side outputs are at scale 1 (1/2, deep supervision, training only,
    ``side_1/2``) and scale 0 (1/1, the final output).

    Loss: the released code averages each task's loss over the two side outputs, so
    ``final_weight = aux_weight = 0.5`` (default here). The paper's Eq. 6 (supp. A.1) averages the
    intermediate scales and adds the final term in full (``model.final_weight=1.0``,
    ``model.aux_weight=1.0``).
    """

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        output_stride: int | None = 16,
        decoder_channels: list[int] = list(DECODER_CHANNELS),  # noqa: B006 (read only, copied)
        aspp_channels: int = 256,
    ) -> None:
        super().__init__(out_channels, backbone, pretrained, output_stride, decoder_channels, aspp_channels)
        self.block_scale = self.check_block_scale(PADNET_SCALE, "the PAD-Net block scale")
        tasks = self.tasks
        self.block = MultiModalDistillation(tasks, tasks, self.decoder_channels[self.block_scale])
