"""Parameters and inference GMACs of the published configurations, beside the reference counts.

    python benchmarks/published_counts.py [--markdown docs/figures/published_counts.md] [--only NAME]

Builds each model as published (no pretrained weights are needed for a count) and counts
parameters of what inference runs and multiply-adds of one forward pass at the published input
size (torch's FLOP counter on the ``meta`` device, so nothing is computed; GMACs = FLOPs / 2).
The reference numbers are code-implied counts, [CALC]: nobody published full-model counts for these
configurations, so they were worked out by hand from the published code's layer definitions (how:
docs/models.md, "Checks against the published configurations"); where published counts exist they
are used, and the source column says which. docs/models.md explains every difference > 3 %.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl3d.models import create_model

NYUD4 = ["semseg", "depth", "normals", "edges"]
PASCAL5 = ["semseg", "human_parts", "saliency", "normals", "edges"]
NYUD_CLASSES, PASCAL_CLASSES = 40, 21


@dataclass(frozen=True)
class Config:
    model: str
    backbone: str
    setting: str
    tasks: tuple[str, ...]
    num_classes: int
    size: tuple[int, int]
    ref_params_m: float | None
    ref_gmacs: float | None
    source: str
    options: tuple[tuple[str, object], ...] = ()


CONFIGS = [
    Config(
        "padnet",
        "hrnet_w18_small_v2",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (425, 560),
        19.52,
        None,
        "[CALC] survey code (ATRC T1's 4.59-5.50 M are single modules, not PAD-Net)",
    ),
    Config(
        "padnet",
        "hrnet_w18_small_v2",
        "NYUD S,D (survey)",
        ("semseg", "depth"),
        NYUD_CLASSES,
        (480, 640),
        7.02,
        None,
        "[CALC] survey code",
    ),
    Config(
        "padnet",
        "hrnet_w18_small_v2",
        "NYUD S,D + aux N,E (survey)",
        tuple(NYUD4),
        NYUD_CLASSES,
        (480, 640),
        12.16,
        None,
        "[CALC] survey code",
        (("main_tasks", ["semseg", "depth"]),),
    ),
    Config(
        "padnet",
        "hrnet_w18_small_v2",
        "PASCAL 5 tasks",
        tuple(PASCAL5),
        PASCAL_CLASSES,
        (512, 512),
        29.31,
        None,
        "[CALC] survey code",
    ),
    Config(
        "mtinet",
        "hrnet_w18_small_v2",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (425, 560),
        17.96,
        22.4,
        "[CALC] survey code",
    ),
    Config(
        "mtinet",
        "hrnet_w18_small_v2",
        "NYUD S,D (survey)",
        ("semseg", "depth"),
        NYUD_CLASSES,
        (480, 640),
        8.58,
        None,
        "[CALC] survey code",
    ),
    Config(
        "mtinet",
        "hrnet_w18_small_v2",
        "NYUD S,D + aux N,E (survey)",
        tuple(NYUD4),
        NYUD_CLASSES,
        (480, 640),
        14.84,
        None,
        "[CALC] survey code",
        (("main_tasks", ["semseg", "depth"]),),
    ),
    Config(
        "mtinet",
        "hrnet_w18_small_v2",
        "PASCAL 5 tasks",
        tuple(PASCAL5),
        PASCAL_CLASSES,
        (512, 512),
        24.49,
        None,
        "[CALC] survey code",
    ),
    Config(
        "mtinet",
        "hrnet_w48",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (425, 560),
        165.4,
        182.6,
        "[CALC] survey code; the 3D-aware paper's host",
    ),
    Config(
        "mtinet",
        "hrnet_w48",
        "PASCAL 5 tasks",
        tuple(PASCAL5),
        PASCAL_CLASSES,
        (512, 512),
        211.9,
        None,
        "[CALC] survey code",
    ),
    Config(
        "padnet3way",
        "resnet101",
        "NYUD S,D",
        ("semseg", "depth"),
        NYUD_CLASSES,
        (448, 576),
        87.2,
        None,
        "[CALC] DenseMTL code",
    ),
    Config(
        "padnet3way",
        "resnet101",
        "NYUD S,D,N",
        ("semseg", "depth", "normals"),
        NYUD_CLASSES,
        (448, 576),
        110.5,
        None,
        "[CALC] DenseMTL code",
    ),
    Config(
        "padnet3way",
        "resnet101",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (448, 576),
        134.3,
        None,
        "[CALC] DenseMTL code",
    ),
    Config(
        "densemtl",
        "resnet101",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (448, 576),
        None,
        None,
        "no published count (mTEB sizes: docs/models.md)",
    ),
    # InvPT: ours leaves out the 6.64 M (NYUD) / 6.97 M (PASCAL) parameters the released code never uses
    # and the 5.35 G / 5.44 G MACs of its computed-but-unused tap-18 conv (models/invpt.py).
    # img_size: the released model's position-embedding grid (resized to the training size at load).
    Config(
        "invpt",
        "vit_large_patch16_384",
        "NYUD S,D,N,E",
        tuple(NYUD4),
        NYUD_CLASSES,
        (448, 576),
        402.1,
        602.0,
        "[CALC] released code (incl. 6.64 M unused params, 5.35 G unused MACs)",
        (("img_size", [448, 576]),),
    ),
    Config(
        "invpt",
        "vit_large_patch16_384",
        "PASCAL 5 tasks",
        tuple(PASCAL5),
        PASCAL_CLASSES,
        (512, 512),
        422.9,
        672.0,
        "[CALC] released code (incl. 6.97 M unused params, 5.44 G unused MACs); "
        "published 423.0 M / 669.9 GFLOPs (TaskPrompter, ICLR'23)",
        (("img_size", [512, 512]),),
    ),
    # ATRC Table 1 (NYUD, HRNet-18-small, module before the final layer; counted at 425x560, the ATRC
    # crop): the multi-task baseline, each single context everywhere, and the searched ATRC.
    *[
        Config(
            "atrc",
            "hrnet_w18_small_v2",
            f"NYUD, genotype {genotype}",
            tuple(NYUD4),
            NYUD_CLASSES,
            (425, 560),
            ref_p,
            ref_g,
            f"ATRC T1 {row}: published",
            (("genotype", genotype),),
        )
        for genotype, row, ref_p, ref_g in (
            ("none", "'None (multi-task)'", 4.52, 17.59),
            ("global", "'Global'", 4.73, 21.43),
            ("local", "'Local'", 4.73, 22.19),
            ("tlabel", "'T-label'", 5.06, 25.91),
            ("slabel", "'S-label'", 5.06, 25.91),
            ("nyud_hrnet18", "'ATRC'", 5.06, 25.76),
        )
    ],
    Config(
        "atrc",
        "hrnet_w18_small_v2",
        "NYUD, ATRC+FPM (nyud_hrnet18)",
        tuple(NYUD4),
        NYUD_CLASSES,
        (425, 560),
        round(4.52 * 2.74 + (5.06 - 4.52), 2),
        None,
        "ATRC §4.3: FPM adds 174 % to the 4.52 M basic net, ATRC's module 0.54 M (T1); "
        "its '−22 % vs MTI-Net' implies 16.5 M for their MTI-Net (ours 17.96 M)",
        (("genotype", "nyud_hrnet18"), ("fpm", True)),
    ),
    Config(
        "atrc",
        "hrnet_w48",
        "NYUD, genotype nyud_hrnet48",
        tuple(NYUD4),
        NYUD_CLASSES,
        (425, 560),
        None,
        None,
        "none published",
        (("genotype", "nyud_hrnet48"),),
    ),
    Config(
        "atrc",
        "hrnet_w18_small_v2",
        "PASCAL, genotype pascal_hrnet18",
        tuple(PASCAL5),
        PASCAL_CLASSES,
        (512, 512),
        None,
        None,
        "none published",
        (("genotype", "pascal_hrnet18"),),
    ),
]


def count(cfg: Config) -> tuple[float, float]:
    """(parameters in M, inference GMACs) of one configuration."""
    classes = {"semseg": cfg.num_classes, "human_parts": 7}
    torch.manual_seed(0)
    with torch.device("meta"):
        model = create_model(cfg.model, list(cfg.tasks), classes, backbone=cfg.backbone, **dict(cfg.options))
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.zeros(1, 3, *cfg.size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    return params / 1e6, counter.get_total_flops() / 2e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--only", help="only this model")
    args = ap.parse_args()
    lines = [
        "| model | backbone | setting | input | params ours (M) | params ref. (M) | Δ | GMACs ours | "
        "GMACs ref. | reference |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for cfg in CONFIGS:
        if args.only and cfg.model != args.only:
            continue
        p, g = count(cfg)
        dp = f"{100 * (p / cfg.ref_params_m - 1):+.1f} %" if cfg.ref_params_m else "–"
        rp = f"{cfg.ref_params_m:.2f}" if cfg.ref_params_m else "–"
        rg = f"{cfg.ref_gmacs:.1f}" if cfg.ref_gmacs else "–"
        lines.append(
            f"| {cfg.model} | {cfg.backbone} | {cfg.setting} | {cfg.size[0]}×{cfg.size[1]} | {p:.2f} "
            f"| {rp} | {dp} | {g:.1f} | {rg} | {cfg.source} |"
        )
        print(lines[-1], flush=True)
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
