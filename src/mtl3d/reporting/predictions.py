"""``mtl3d predict``: per-task files, a contact sheet per image and one ``index.html`` gallery.

Layout of ``OUT`` (one folder per input image, named after it)::

    OUT/index.html               every contact sheet, with links to the files; opens without a server
    OUT/<name>/sheet.png         the input beside every task's prediction
    OUT/<name>/<task>.png        classification: indexed PNG (the dataset's palette), class ids as values
                                 1-channel regression (depth): 16-bit PNG in millimetres (metres x 1000)
                                   + <task>_preview.png, colour-mapped with its scale
                                 3-channel regression (normals): RGB, (n + 1) / 2
                                 binary (edges, saliency): 8-bit probability x 255
    OUT/<name>/predictions.npz   with --format npz: the raw arrays instead of the PNGs

What each kind of task becomes is decided by its ``TaskSpec`` (kind and channels), not by its name.
"""

from __future__ import annotations

import glob
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mtl3d.engine.predictor import IMAGE_SUFFIXES, Model, read_image
from mtl3d.errors import UserError
from mtl3d.io import atomic_write, atomic_write_text
from mtl3d.reporting.figures.style import class_colors, colorize
from mtl3d.tasks import get_task

FORMATS = ("png", "npz")
PANEL_HEIGHT = 192  # contact-sheet panels are scaled to this height (aspect kept)


@dataclass
class PredictSummary:
    written: list[dict[str, Any]] = field(default_factory=list)  # name, source, size, notes, files
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, why)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files from files, folders (recursively: JPEG/PNG/TIFF) and glob patterns, in the order given
    (duplicates once); names that match nothing are returned as failures."""
    files: list[Path] = []
    failed: list[tuple[str, str]] = []

    def folder(p: Path) -> list[Path]:
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = folder(p)
            if not found:
                failed.append((s, f"folder has no images ({', '.join(IMAGE_SUFFIXES)})"))
            files += found
        elif p.is_file():
            files.append(p)
        elif _has_magic(s):
            matches = [Path(m) for m in sorted(glob.glob(s, recursive=True))]
            found = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            for m in matches:
                if m.is_dir():
                    found += folder(m)
            if not found:
                failed.append((s, "pattern matches no image"))
            files += found
        else:
            failed.append((s, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, failed


def output_names(files: list[Path]) -> list[str]:
    """One folder name per input: its stem, with the extension and then a counter added on clashes."""
    names: list[str] = []
    taken: set[str] = set()
    for f in files:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in f.stem) or "image"
        name = base
        if name in taken:
            name = f"{base}_{f.suffix.lstrip('.').lower()}"
        k = 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def palette(model: Model, task: str) -> np.ndarray:
    """RGB palette (uint8, n x 3) of a classification task: the model file's, else the figures' one."""
    n = len(model.class_names.get(task, [])) or int(
        model.num_classes[task] if isinstance(model.num_classes, dict) else model.num_classes
    )
    if task in model.palettes:
        return np.asarray(model.palettes[task], dtype=np.uint8)
    return class_colors(n)


# ------------------------------------------------------------------------------------------ encoding
def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def _value_range(x: np.ndarray) -> tuple[float, float]:
    v = x[np.isfinite(x) & (x > 0)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    return lo, max(hi, lo + 1e-6)


def _with_scale(rgb: np.ndarray, lo: float, hi: float, unit: str) -> Image.Image:
    """A colour-mapped map with a viridis bar and its range underneath."""
    import matplotlib

    h, w = rgb.shape[:2]
    bar_w = max(w, 160)
    canvas = Image.new("RGB", (bar_w, h + 28), "white")
    canvas.paste(Image.fromarray(rgb), (0, 0))
    ramp = matplotlib.colormaps["viridis"](np.linspace(0, 1, bar_w))[:, :3]
    bar = (np.repeat(ramp[None], 8, axis=0) * 255).round().astype(np.uint8)
    canvas.paste(Image.fromarray(bar), (0, h + 2))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, h + 12), f"{lo:.2f} {unit}", fill="black")
    right = f"{hi:.2f} {unit}"
    draw.text((bar_w - 2 - draw.textlength(right), h + 12), right, fill="black")
    return canvas


def _task_images(model: Model, task: str, pred: np.ndarray) -> tuple[dict[str, bytes], np.ndarray]:
    """Files of one task's prediction ({file name: PNG bytes}) and its colour panel for the sheet."""
    spec = get_task(task)
    if spec.kind == "classification":
        pal = palette(model, task)
        im = Image.fromarray(pred.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(pal)] = pal[:256]
        im.putpalette(flat.ravel().tolist())
        ok = pred < len(pal)
        panel = np.zeros((*pred.shape, 3), np.uint8)
        panel[ok] = pal[pred[ok]]
        return {f"{task}.png": _png_bytes(im)}, panel
    if spec.kind == "binary":
        g = (np.clip(pred, 0.0, 1.0) * 255).round().astype(np.uint8)
        return {f"{task}.png": _png_bytes(Image.fromarray(g, mode="L"))}, np.repeat(g[..., None], 3, axis=2)
    if pred.ndim == 2:  # one-channel regression (depth, metres): 16-bit millimetres + a scaled preview
        mm = np.clip(np.nan_to_num(pred) * 1000.0, 0, 65535).round().astype(np.uint16)
        lo, hi = _value_range(pred)
        rgb = (colorize(task, pred, depth_range=(lo, hi)) * 255).round().astype(np.uint8)
        files = {
            f"{task}.png": _png_bytes(Image.fromarray(mm)),
            f"{task}_preview.png": _png_bytes(_with_scale(rgb, lo, hi, "m")),
        }
        return files, rgb
    rgb = (colorize(task, pred) * 255).round().astype(np.uint8)  # normals: (n + 1) / 2
    return {f"{task}.png": _png_bytes(Image.fromarray(rgb))}, rgb


def task_panels(model: Model, pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each task's prediction as the RGB uint8 panel the contact sheet shows."""
    return {t: _task_images(model, t, pred[t])[1] for t in model.tasks}


def contact_sheet(
    image: np.ndarray, panels: dict[str, np.ndarray], height: int = PANEL_HEIGHT
) -> Image.Image:
    """The input beside every task's colour panel, each scaled to ``height`` and titled."""
    h, w = image.shape[:2]
    pw = max(1, round(w * height / h))
    items = [("input", image)] + list(panels.items())
    sheet = Image.new("RGB", (len(items) * (pw + 4) + 4, height + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, arr) in enumerate(items):
        rgb = arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        im = Image.fromarray(rgb).resize((pw, height), Image.Resampling.NEAREST)
        x = 4 + i * (pw + 4)
        sheet.paste(im, (x, 18))
        draw.text((x, 3), title, fill="black")
    return sheet


def _display_image(arr: np.ndarray) -> np.ndarray:
    return (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr


# ----------------------------------------------------------------------------------------- the command
def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that already holds files, unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"{out} already holds files; add --overwrite to replace them, or choose another --out"
        )


def predict_images(
    model: Model,
    inputs: list[str],
    out: str | Path,
    fmt: str = "png",
    overwrite: bool = False,
    batch_size: int = 4,
    progress: bool = True,
) -> PredictSummary:
    """Predict every input image and write its files, contact sheet and the gallery (see the module doc).

    An unreadable input is skipped and listed in the summary (and the gallery); nothing in ``out`` is
    replaced unless ``overwrite``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    out = Path(out)
    check_out(out, overwrite)
    files, failed = collect_inputs(inputs)
    if not files and not failed:
        raise UserError("no input images given")
    summary = PredictSummary(failed=list(failed))
    names = output_names(files)
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(files), batch_size):
        chunk = list(zip(files[start : start + batch_size], names[start : start + batch_size], strict=True))
        loaded = []
        for path, name in chunk:
            try:
                arr, notes = read_image(path)
            except UserError as e:
                summary.failed.append((str(path), str(e).removeprefix(f"{path}: ")))
                continue
            fit = model.fit_size(*arr.shape[:2])
            if fit is not None:
                notes = [*notes, f"scaled to {fit[0]}x{fit[1]} to fit the model's input"]
            loaded.append((path, name, arr, notes))
        if loaded:
            preds = model.predict_batch([a for _, _, a, _ in loaded])
            for (path, name, arr, notes), pred in zip(loaded, preds, strict=True):
                summary.written.append(_write_one(model, out / name, path, arr, notes, pred, fmt))
        bar.update(len(chunk))
    bar.close()
    write_gallery(model, out, summary)
    return summary


def _write_one(
    model: Model, folder: Path, source: Path, arr: np.ndarray, notes: list[str], pred: dict, fmt: str
) -> dict[str, Any]:
    panels: dict[str, np.ndarray] = {}
    written: list[str] = []
    blobs: dict[str, bytes] = {}
    for task in model.tasks:
        files, panel = _task_images(model, task, pred[task])
        panels[task] = panel
        if fmt == "png":
            blobs.update(files)
    if fmt == "npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, **pred)
        blobs["predictions.npz"] = buf.getvalue()
    blobs["sheet.png"] = _png_bytes(contact_sheet(_display_image(arr), panels))
    for fname, data in blobs.items():
        _write_bytes(folder / fname, data)
        written.append(fname)
    return {
        "name": folder.name,
        "source": str(source),
        "size": [int(arr.shape[0]), int(arr.shape[1])],
        "notes": notes,
        "files": written,
    }


def write_gallery(model: Model, out: Path, summary: PredictSummary) -> Path:
    """``out/index.html``: model description, class legends, every contact sheet with links to its files
    (relative links, so it opens from disk), and the inputs that failed; ``out/predictions.json`` lists
    the same."""
    esc = html.escape
    meta = model.meta
    rows = []
    for item in summary.written:
        base = quote(item["name"])
        links = " · ".join(f'<a href="{base}/{quote(f)}">{esc(f)}</a>' for f in item["files"])
        notes = f'<div class="notes">{esc("; ".join(item["notes"]))}</div>' if item["notes"] else ""
        rows.append(
            f'<figure><a href="{base}/sheet.png"><img src="{base}/sheet.png" alt="{esc(item["name"])}" '
            f'loading="lazy"></a><figcaption><b>{esc(item["source"])}</b> '
            f"({item['size'][0]}×{item['size'][1]}){notes}<div>{links}</div></figcaption></figure>"
        )
    legends = []
    for task, names in model.class_names.items():
        pal = palette(model, task)
        chips = "".join(
            f'<span class="chip"><i style="background:rgb({c[0]},{c[1]},{c[2]})"></i>{esc(n)}</span>'
            for n, c in zip(names, pal.tolist(), strict=False)
        )
        legends.append(f"<p><b>{esc(task)}</b> {chips}</p>")
    failed = ""
    if summary.failed:
        items = "".join(f"<li>{esc(s)}: {esc(why)}</li>" for s, why in summary.failed)
        failed = f'<h2>Not predicted ({len(summary.failed)})</h2><ul class="failed">{items}</ul>'
    ds = meta.get("dataset") or {}
    about = (
        f"{esc(model.cfg.model.name)} ({esc(model.cfg.model.backbone)}), "
        f"tasks {esc(', '.join(model.tasks))}; "
        f"trained on {esc(str(ds.get('name')))}{' ' + esc(ds['variant']) if ds.get('variant') else ''}; "
        f"input {esc(model.resize_mode)} {model.input_size[0]}×{model.input_size[1]}; "
        f"weights SHA-256 {esc(str(meta.get('weights_sha256', 'n/a (run folder)')))}; "
        f"source {esc(model.source)}"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mtl3d predictions</title>
<style>
body{{font-family:sans-serif;margin:1em;}} figure{{margin:0 0 1.2em 0;}} img{{max-width:100%;}}
figcaption{{font-size:.85em;}} .notes{{color:#a60;}} .chip{{margin-right:.8em;white-space:nowrap;}}
.chip i{{display:inline-block;width:.9em;height:.9em;margin-right:.25em;vertical-align:middle;}}
.failed{{color:#b00;}}
</style></head><body>
<h1>mtl3d predictions</h1>
<p>{about}</p>
<p>{len(summary.written)} image(s); depth PNGs hold millimetres (16-bit), edges/saliency PNGs
probability × 255, normals (n + 1) / 2 as RGB.</p>
{"".join(legends)}
{"".join(rows)}
{failed}
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    record = {"model": model.source, "written": summary.written, "failed": summary.failed}
    atomic_write_text(out / "predictions.json", json.dumps(record, indent=1) + "\n")
    return out / "index.html"
