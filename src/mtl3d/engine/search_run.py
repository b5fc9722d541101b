"""A finished ATRC search run -> its ``genotype.json`` (what ``mtl3d search atrc`` writes at the end)."""

from __future__ import annotations

from pathlib import Path

from mtl3d.engine.evaluator import load_run
from mtl3d.models import build_model
from mtl3d.models.atrc.search import write_genotype


def search_genotype(run_dir: str | Path) -> Path:
    """Write ``run_dir/genotype.json`` from a finished search run (its config and last checkpoint)."""
    run_dir = Path(run_dir)
    cfg, ckpt = load_run(run_dir)
    model = build_model(cfg.model, cfg.tasks, ckpt["num_classes"], pretrained=False)
    model.load_state_dict(ckpt["model"])
    return write_genotype(
        model,
        run_dir / "genotype.json",
        source=f"mtl3d search atrc: {cfg.data.dataset}, {cfg.model.backbone}, seed {cfg.seed}",
        step=int(ckpt["step"]),
    )
