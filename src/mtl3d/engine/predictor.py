"""Run a trained model on any image: ``model = mtl3d.load(path_or_run); model.predict(image)``.

A model comes from a finished run folder (``config.yaml`` + ``last.pt``), a model file (``.mtl3d``,
:mod:`mtl3d.engine.modelfile`) or a URL with a pinned SHA-256. Only the host network is built: the 3D-aware
regularizer is a training-time branch and is never loaded.

Input policy (from the model's recipe, as at evaluation): ``resize`` models see every image resized to
the training input size; ``pad`` models see it padded (centred) to the input size, after scaling it down
to fit if it is larger (evaluation never needs that, a photo may). Outputs are mapped back to each image's
original size with the evaluator's own steps (:func:`~mtl3d.engine.inference.to_original`, then
:func:`~mtl3d.engine.inference.postprocess`), so a model predicts on a dataset image exactly what
``mtl3d evaluate`` scores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl3d import config as C
from mtl3d.data.folder import manifest_class_names, read_manifest
from mtl3d.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, resize
from mtl3d.engine import modelfile
from mtl3d.engine.evaluator import load_run
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.inference import collate_eval, infer, postprocess, to_original
from mtl3d.engine.rundir import RunDir, variant_name
from mtl3d.engine.runtime import resolve_device, to_device
from mtl3d.errors import UserError
from mtl3d.models import build_model
from mtl3d.tasks import get_task

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


# ------------------------------------------------------------------------------------------- images
def as_rgb(image: Any) -> tuple[np.ndarray, list[str]]:
    """An image (PIL image, or array HxW / HxWx1/3/4, uint8 / uint16 / float in [0, 1]) as HxWx3 uint8 or
    uint16, with a note for each conversion (greyscale, alpha dropped, 16-bit, float)."""
    from PIL import Image

    notes: list[str] = []
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(image)
            arr = np.clip(arr, 0, 65535).astype(np.uint16) if arr.dtype != np.uint16 else arr
        elif image.mode == "F":
            arr = np.asarray(image, dtype=np.float32)
        else:
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                notes.append("alpha channel dropped")
            if image.mode in ("L", "1", "LA"):
                notes.append("greyscale converted to RGB")
            elif image.mode not in ("RGB", "RGBA", "P"):
                notes.append(f"{image.mode} converted to RGB")
            arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        if "alpha channel dropped" not in notes:
            notes.append("alpha channel dropped")
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        if "greyscale converted to RGB" not in notes:
            notes.append("greyscale converted to RGB")
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise UserError(f"not an image: array of shape {tuple(arr.shape)} (expected HxW or HxWx3/4)")
    if arr.dtype == np.uint16:
        notes.append("16-bit scaled to [0, 1]")
    elif np.issubdtype(arr.dtype, np.floating):
        notes.append("float image clipped to [0, 1]")
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise UserError(f"unsupported image data type {arr.dtype} (uint8, uint16 or float in [0, 1])")
    return np.ascontiguousarray(arr), notes


def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """An image file (JPEG/PNG/TIFF, any mode; EXIF orientation applied) as :func:`as_rgb` returns it.
    An unreadable file is a one-line ``UserError`` naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return as_rgb(im)
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except UnidentifiedImageError:
        raise UserError(f"{p}: not an image file PIL can read") from None
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    except Exception as e:  # truncated or damaged files: PIL raises OSError, SyntaxError, ValueError, ...
        raise UserError(f"{p}: unreadable image ({type(e).__name__}: {str(e)[:120]})") from None


def _to_tensor(arr: np.ndarray) -> Tensor:
    """HxWx3 -> 3xHxW float in [0, 1]; uint8 exactly as the dataset readers convert it."""
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
    if arr.dtype == np.uint8:
        return t.float() / 255.0
    if arr.dtype == np.uint16:
        return t.float() / 65535.0
    return t.float()


# ------------------------------------------------------------------------------------------- sources
def _manifest_sha256(root: Path) -> str | None:
    path = root / "manifest.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def describe_run(run_dir: str | Path, data_root: str | Path | None = None) -> tuple[dict[str, Tensor], dict]:
    """The host network's weights and the model-file metadata of a finished run (what export writes).

    Class names, the native input size and the dataset's identity come from the prepared dataset's
    manifest (``data_root``, default the run's ``data.root``); metrics from the run's ``metrics.json``
    when it has been evaluated.
    """
    from mtl3d._version import __version__

    run_dir = Path(run_dir)
    cfg, ckpt = load_run(run_dir)
    root = Path(data_root) if data_root is not None else Path(cfg.data.root)
    try:
        manifest = read_manifest(root, cfg.data.dataset)
    except UserError as e:
        raise UserError(f"{e} (the run's class names and input size come from it; --data-root DIR)") from None
    num_classes = ckpt["num_classes"]
    num_classes = dict(num_classes) if isinstance(num_classes, dict) else int(num_classes)
    main = build_model(cfg.model, cfg.tasks, num_classes, pretrained=False).main_tasks
    class_names: dict[str, list[str]] = {}
    for t in main:
        if get_task(t).kind == "classification":
            names = manifest_class_names(manifest, t)
            if names is None:
                raise UserError(f"dataset manifest at {root} names no classes for task {t!r}")
            class_names[t] = list(names)
    if cfg.data.height and cfg.data.width:
        size = [int(cfg.data.height), int(cfg.data.width)]
    elif manifest.get("height") and manifest.get("width"):
        size = [int(manifest["height"]), int(manifest["width"])]
    else:
        raise UserError(
            f"run {run_dir} has no input size (data.height/width) and its dataset's manifest gives none"
        )
    metrics = None
    mpath = RunDir(run_dir).metrics
    if mpath.is_file():
        rep = json.loads(mpath.read_text())
        metrics = {k: rep.get(k) for k in ("split", "n_images", "eval_resolution", "metrics", "protocols")}
        metrics.update(params=rep.get("params"), flops=rep.get("flops"))
    meta = {
        "config": C.to_dict(cfg),
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "tasks": list(main),
        "num_classes": num_classes,
        "class_names": class_names,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "input": {"resize_mode": cfg.data.resize_mode, "size": size},
        "metrics": metrics,
        "dataset": {
            "name": cfg.data.dataset,
            "variant": manifest.get("variant"),
            "manifest_sha256": _manifest_sha256(root),
        },
        "run": {
            "name": run_dir.name,
            "variant": variant_name(cfg.model.name, cfg.regularizer.enabled),
            "seed": cfg.seed,
            "iters": cfg.iters,
        },
        "code_version": modelfile.code_version(),
        "package_version": __version__,
    }
    return ckpt["model"], meta


# --------------------------------------------------------------------------------------------- model
class Model:
    """A trained host network ready for inference: ``predict(image) -> {task: array}`` at the image's size.

    Outputs per task kind: classification -> HxW uint8 class ids; binary (edges, saliency) -> HxW float32
    probabilities; regression -> HxW float32 (depth, metres) or HxWxC float32 (normals, unit vectors).
    """

    def __init__(
        self, cfg: C.TrainConfig, state: dict[str, Tensor], meta: dict[str, Any], source: str, device: str
    ) -> None:
        self.cfg, self.meta, self.source = cfg, meta, source
        self.num_classes = meta["num_classes"]
        self.network = build_model(cfg.model, cfg.tasks, self.num_classes, pretrained=False)
        try:
            self.network.load_state_dict(state)
        except RuntimeError as e:
            raise UserError(
                f"{source}: weights do not fit model {cfg.model.name!r} ({str(e)[:200]})"
            ) from None
        self.device = resolve_device(device)
        # The CUDA path as training runs it: channels-last and bf16 autocast (config's amp); none on a CPU
        self.fast = FastPath.for_device(self.device, cfg.amp)
        self.fast.module(self.network.to(self.device).eval())
        self.tasks: list[str] = list(self.network.main_tasks)
        self.class_names: dict[str, list[str]] = dict(meta.get("class_names") or {})
        self.palettes: dict[str, list[list[int]]] = dict(meta.get("palettes") or {})
        norm = meta.get("normalization") or {}
        if norm and (tuple(norm["mean"]), tuple(norm["std"])) != (IMAGENET_MEAN, IMAGENET_STD):
            raise UserError(f"{source}: normalisation {norm} is not the one this mtl3d uses (ImageNet)")
        self.resize_mode: str = meta["input"]["resize_mode"]
        self.input_size: tuple[int, int] = tuple(meta["input"]["size"])  # type: ignore[assignment]
        self._transform = build_transform(self.input_size, train=False, mode=self.resize_mode)

    def __repr__(self) -> str:
        return (
            f"Model({self.cfg.model.name}, backbone={self.cfg.model.backbone}, tasks={self.tasks}, "
            f"input={self.resize_mode} {self.input_size[0]}x{self.input_size[1]}, device={self.device.type})"
        )

    def fit_size(self, h: int, w: int) -> tuple[int, int] | None:
        """The size a ``pad`` model scales a larger image to (aspect kept); None if it fits."""
        H, W = self.input_size
        if self.resize_mode != "pad" or (h <= H and w <= W):
            return None
        f = min(H / h, W / w)
        return max(1, int(h * f)), max(1, int(w * f))

    def _sample(self, arr: np.ndarray) -> dict[str, Any]:
        image = _to_tensor(arr)
        h, w = image.shape[-2:]
        sample: dict[str, Any] = {"image": image}
        fit = self.fit_size(h, w)
        if fit is not None:
            sample = resize(sample, fit)
        sample = self._transform(sample, None)
        sample["original_size"] = torch.tensor([h, w], dtype=torch.int64)
        return sample

    @torch.no_grad()
    def predict_batch(self, images: list[Any]) -> list[dict[str, np.ndarray]]:
        """Predictions for several images (any sizes) in one forward pass."""
        arrays = [as_rgb(im)[0] for im in images]
        batch = collate_eval([self._sample(a) for a in arrays])
        batch = to_device(batch, self.device)
        in_size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
        _, out = infer(self.network, batch, self.fast)
        results = []
        for i, (box, hw) in enumerate(
            zip(batch["valid_box"].tolist(), batch["original_size"].tolist(), strict=True)
        ):
            preds = {}
            for t in self.tasks:
                p = postprocess(t, to_original(out[t][i].float(), box, in_size, tuple(hw))[None])[0]
                preds[t] = _as_array(t, p)
            results.append(preds)
        return results

    def predict(self, image: Any) -> dict[str, np.ndarray]:
        """``{task: array}`` for one image (a path, a PIL image or an array), at the image's size."""
        if isinstance(image, (str, Path)):
            image = read_image(image)[0]
        return self.predict_batch([image])[0]


def _as_array(task: str, pred: Tensor) -> np.ndarray:
    """A post-processed [C, H, W] prediction as returned to users (see :class:`Model`)."""
    if get_task(task).kind == "classification":
        labels = pred.argmax(0)
        return labels.to(torch.uint8 if pred.shape[0] <= 256 else torch.int32).cpu().numpy()
    a = pred.float().cpu().numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(a, 0, -1))


def load(
    source: str | Path,
    device: str = "cpu",
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = False,
) -> Model:
    """A model from a run folder, a model file, or a URL (needs the published ``sha256``; cached).

    ``device``: ``cpu`` (default, bit-for-bit reproducible), ``cuda`` or ``auto``. ``data_root``: where a
    run folder's prepared dataset is, when it moved (class names, input size).
    """
    if modelfile.is_url(source):
        source = modelfile.fetch_model_file(str(source), sha256, cache_dir, progress)
    path = Path(source)
    if path.is_dir():
        state, meta = describe_run(path, data_root)
        cfg = C.from_dict(meta["config"])
        return Model(cfg, state, meta, str(path), device)
    if not path.exists():
        raise UserError(f"no model at {path} (a run folder, a .mtl3d model file or a URL)")
    if sha256 is not None and modelfile.file_sha256(path) != sha256.lower().removeprefix("sha256:"):
        raise UserError(f"model file {path} does not match the given SHA-256 {sha256[:12]}…")
    cfg, ckpt, meta = modelfile.load_run_state(path)
    return Model(cfg, ckpt["model"], meta, str(path), device)
