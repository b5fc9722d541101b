"""Self-contained model files (``NAME.mtl3d``): one safetensors file, weights plus what using them needs.

The file is a plain safetensors file (no pickle, readable by any safetensors reader). Its header's
``__metadata__`` holds one JSON document under the key ``mtl3d``: the format version, the resolved run
config, tasks, class names and palettes, normalisation, input policy, evaluation metrics, the dataset's
identity, the code version and ``weights_sha256``.

``weights_sha256`` hashes the tensors themselves (name, dtype, shape and bytes of each, in name order),
so it is independent of how the header is written and is re-computed on every load: a file whose
weights changed after export is refused. The SHA-256 of the *whole file* is what a download pins
(:func:`fetch_model_file`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtl3d.errors import UserError
from mtl3d.io import atomic_write

FORMAT_VERSION = 1
SUFFIX = ".mtl3d"
_KEY = "mtl3d"
CACHE_ENV = "MTL3D_CACHE"  # where downloaded model files are kept (default: the OS cache folder)


def weights_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's tensors: name, dtype, shape and little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_model_file(path: str | Path, state: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Write ``state`` (the host network's weights) and ``meta`` atomically; returns the weights' SHA-256.

    ``meta`` gets ``format_version`` and ``weights_sha256`` added. Tensors are copied to contiguous CPU
    memory first (safetensors refuses shared or strided storage).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    digest = weights_sha256(tensors)
    doc = {"format_version": FORMAT_VERSION, **meta, "weights_sha256": digest}
    header = {_KEY: json.dumps(doc, sort_keys=True)}
    atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=header))
    return digest


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON document of a model file, checked for its format version (weights not read)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise UserError(f"{p} is not an mtl3d model file (not safetensors: {_short(e)})") from None
    if _KEY not in header:
        raise UserError(f"{p} is a safetensors file but not an mtl3d model file (no '{_KEY}' metadata)")
    try:
        doc = json.loads(header[_KEY])
    except json.JSONDecodeError:
        raise UserError(
            f"corrupt model file {p}: its metadata is not valid JSON; download it again"
        ) from None
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise UserError(f"corrupt model file {p}: no format version; download it again")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{p} was written by a newer mtl3d (model file format {version}; this one reads up to "
            f"{FORMAT_VERSION}, code version {doc.get('code_version', '?')}); upgrade mtl3d to load it"
        )
    return doc


def read_model_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and metadata of a model file; refuses a file whose weights do not match their SHA-256."""
    from safetensors.torch import load_file

    doc = read_metadata(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise UserError(f"corrupt model file {path} ({_short(e)}); download it again") from None
    digest = weights_sha256(state)
    if digest != doc.get("weights_sha256"):
        raise UserError(
            f"model file {path} does not match its recorded weights SHA-256 "
            f"({digest[:12]}… != {str(doc.get('weights_sha256'))[:12]}…): it was altered or damaged; "
            "download or export it again"
        )
    return state, doc


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def fetch_model_file(
    url: str, sha256: str | None, cache_dir: str | Path | None = None, progress: bool = False
) -> Path:
    """Download (or take from the cache) the model file at ``url``, verified against the pinned ``sha256``."""
    import os

    import pooch

    if not sha256:
        raise UserError(f"loading {url} needs its published SHA-256 (--sha256 HEX, or sha256=...)")
    sha256 = sha256.lower().removeprefix("sha256:")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise UserError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    cache = Path(cache_dir or os.environ.get(CACHE_ENV) or pooch.os_cache("mtl3d")) / "models"
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model" + SUFFIX
    try:
        got = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=f"{sha256[:16]}-{name}",
            path=cache,
            progressbar=progress,
        )
    except ValueError as e:
        if "hash" in str(e).lower():
            raise UserError(
                f"model file at {url} does not match the pinned SHA-256 {sha256[:12]}…; not using it "
                "(check the URL and the published hash)"
            ) from None
        raise UserError(f"cannot download {url}: {_short(e)}") from None
    except Exception as e:  # requests' connection and HTTP errors
        raise UserError(f"cannot download {url}: {_short(e)}") from None
    return Path(got)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_run_state(path: str | Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A model file as the evaluator reads a run: ``(config, {"model": weights, "num_classes": ...}, meta)``.

    A model that this installation does not register, or a config it does not understand, is a one-line
    error naming the code version that wrote the file.
    """
    from mtl3d import config as C
    from mtl3d.models.registry import list_models

    state, doc = read_model_file(path)
    wrote = doc.get("code_version", "?")
    name = doc.get("config", {}).get("model", {}).get("name")
    if name not in list_models():
        raise UserError(
            f"model file {path} needs model {name!r}, which this mtl3d does not register "
            f"(it has: {', '.join(list_models())}); install the mtl3d that wrote it ({wrote})"
        )
    try:
        cfg = C.from_dict(doc["config"])
    except UserError as e:
        raise UserError(f"model file {path}: {e} (written by mtl3d {wrote}; install that version)") from None
    num_classes = doc.get("num_classes")
    return cfg, {"model": state, "num_classes": num_classes}, doc


def code_version() -> str:
    """The git commit of the source tree this package runs from (``+dirty`` with local changes), else
    the package version."""
    import subprocess

    from mtl3d._version import __version__

    here = Path(__file__).resolve().parents[1]  # the mtl3d package
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__
