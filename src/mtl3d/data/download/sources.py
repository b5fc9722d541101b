"""``sources.yaml``: which archives each dataset variant needs, their mirrors, sizes and hashes; and the
message that says where to put a copy obtained by hand."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mtl3d.errors import UserError, unknown_name

SOURCES_ENV = "MTL3D_SOURCES"
KINDS = ("http", "gdrive")


class SourceUnavailable(UserError):
    """No mirror delivered a file (or none is known): the message says where to put a copy by hand.

    The message spans several lines; it is the one multi-line user error.
    """


class VerificationError(UserError):
    """A file's size or hash disagrees with the pin or the lock."""


@dataclass(frozen=True)
class Mirror:
    url: str
    kind: str  # "http" | "gdrive"


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int | None
    sha256: str | None
    reported_sha256: str | None  # unconfirmed third-party hash: compared, a mismatch only warns
    mirrors: tuple[Mirror, ...]


@dataclass(frozen=True)
class VariantSpec:
    dataset: str
    variant: str
    description: str
    top_dir: str
    required: tuple[str, ...]  # relative to top_dir; a trailing "/" means a folder
    files: tuple[FileSpec, ...]
    image_size: tuple[int, int] | None = None


def _load(sources: str | Path | None) -> tuple[dict[str, Any], str]:
    """The parsed sources file and how to name it in messages."""
    if sources is None and os.environ.get(SOURCES_ENV):
        sources = os.environ[SOURCES_ENV]
    if sources is None:
        where = "the packaged sources.yaml"
        text = resources.files("mtl3d.data").joinpath("sources.yaml").read_text(encoding="utf-8")
    else:
        where = str(sources)
        if not Path(sources).is_file():
            raise UserError(f"sources file {where} not found")
        text = Path(sources).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{where} is not valid YAML{line}") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise UserError(f"{where}: expected a top-level 'datasets' mapping")
    return data, where


def _sha(value: Any, what: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise UserError(f"{where}: {what} must be 64 hex digits or null")
    return value.lower()


def _parse_file(raw: Any, ctx: str, where: str) -> FileSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise UserError(f"{where}: {ctx}: every file needs a 'name'")
    name = raw["name"]
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{where}: {ctx}: file name {name!r} must be a plain file name")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise UserError(f"{where}: {ctx}/{name}: size must be a byte count or null")
    mirrors = []
    for m in raw.get("mirrors") or []:
        if not isinstance(m, dict) or not isinstance(m.get("url"), str):
            raise UserError(f"{where}: {ctx}/{name}: every mirror needs a 'url'")
        kind = m.get("kind", "http")
        if kind not in KINDS:
            raise UserError(f"{where}: {ctx}/{name}: mirror kind {kind!r} is not one of {', '.join(KINDS)}")
        mirrors.append(Mirror(m["url"], kind))
    return FileSpec(
        name=name,
        size=size,
        sha256=_sha(raw.get("sha256"), f"{ctx}/{name} sha256", where),
        reported_sha256=_sha(raw.get("reported_sha256"), f"{ctx}/{name} reported_sha256", where),
        mirrors=tuple(mirrors),
    )


def _parse_variant(dataset: str, variant: str, raw: Any, where: str) -> VariantSpec:
    ctx = f"{dataset}/{variant}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: {ctx} must be a mapping")
    top = raw.get("top_dir")
    if not isinstance(top, str) or not top or "/" in top.strip("/") or top in (".", ".."):
        raise UserError(f"{where}: {ctx}: top_dir must be one folder name")
    files = raw.get("files") or []
    if not isinstance(files, list) or not files:
        raise UserError(f"{where}: {ctx}: 'files' must list at least one file")
    size = raw.get("image_size")
    return VariantSpec(
        dataset=dataset,
        variant=variant,
        description=str(raw.get("description") or ""),
        top_dir=top.strip("/"),
        required=tuple(str(r) for r in raw.get("required") or []),
        files=tuple(_parse_file(f, ctx, where) for f in files),
        image_size=(int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None,
    )


def _resolve(dataset: str, variant: str | None, sources: str | Path | None) -> VariantSpec:
    data, where = _load(sources)
    datasets = data["datasets"]
    if dataset not in datasets:
        raise unknown_name("dataset", dataset, list(datasets))
    entry = datasets[dataset] or {}
    variants = entry.get("variants") or {}
    if variant is None:
        variant = entry.get("default")
        if variant is None:
            raise UserError(f"{where}: {dataset} has no default variant; pass --variant")
    if variant not in variants:
        raise unknown_name("variant", variant, list(variants))
    return _parse_variant(dataset, variant, variants[variant], where)


def dataset_names() -> list[str]:
    """Datasets that have download sources (``$MTL3D_SOURCES`` if set, else the packaged file)."""
    return sorted(_load(None)[0]["datasets"])


def variant_names(dataset: str) -> list[str]:
    """The variants of ``dataset``: different datasets of the same name, never mirrors of each other."""
    datasets = _load(None)[0]["datasets"]
    if dataset not in datasets:
        raise unknown_name("dataset", dataset, list(datasets))
    return sorted((datasets[dataset] or {}).get("variants") or {})


def default_variant(dataset: str) -> str:
    """The variant used when none is named."""
    return _resolve(dataset, None, None).variant


def variant_spec(dataset: str, variant: str | None, sources: str | Path | None = None) -> VariantSpec:
    """What to fetch for ``dataset``/``variant`` (None: the default variant) and how to check it.

    ``sources``: a sources YAML; None means ``$MTL3D_SOURCES`` if set, else the packaged one.
    """
    return _resolve(dataset, variant, sources)


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n:,} bytes ({n / 2**30:.2f} GiB)" if n >= 2**30 else f"{n:,} bytes"


def _raw_opt(spec: VariantSpec, raw: Path) -> str:
    return "" if Path(raw) == Path("data/raw") / spec.dataset else f" --raw {raw}"


def _next_step(spec: VariantSpec, raw: Path) -> str:
    """How to get a good copy of the variant's archive, in one line."""
    f = spec.files[0]
    where = f" (from {f.mirrors[0].url})" if f.mirrors else ""
    return (
        f"run `mtl3d data download {spec.dataset} --variant {spec.variant}{_raw_opt(spec, raw)}` to fetch "
        f"{f.name} again{where}, or put a good copy at {Path(raw) / f.name}"
    )


def _placement(spec: VariantSpec, raw: Path, failed: list[tuple[str, str]] | None) -> str:
    raw_abs = Path(raw).absolute()
    names = ", ".join(f.name for f in spec.files)
    head = f"{spec.dataset} (variant {spec.variant}: {spec.description})"
    if failed is None:
        lines = [f"{head} needs {names}, which is not in {raw_abs}."]
    else:
        lines = [f"{head}: no mirror delivered {names}."]
    reasons = dict(failed or [])
    for f in spec.files:
        if f.sha256:
            hashes = f"sha256 {f.sha256}"
        else:
            hashes = "sha256 not published; recorded on first use"
            if f.reported_sha256:
                hashes += f" (a third party reports {f.reported_sha256}, unconfirmed)"
        lines.append(f"  {f.name}: {_fmt_size(f.size)}; {hashes}")
        if not f.mirrors:
            lines.append("    no public mirror is known")
        for m in f.mirrors:
            why = f" -> {reasons[m.url]}" if m.url in reasons else ""
            lines.append(f"    {'tried' if failed is not None else 'mirror'} ({m.kind}): {m.url}{why}")
    required = ", ".join(spec.required) if spec.required else "its contents"
    lines.append("Get it by hand (a browser can open these links) and put it at:")
    lines.extend(f"  {raw_abs / f.name}" for f in spec.files)
    lines.append(f"or extract it yourself so that this folder exists (with {required}):")
    lines.append(f"  {raw_abs / spec.top_dir}/")
    lines.append(f"then run: mtl3d data prepare {spec.dataset} --variant {spec.variant}{_raw_opt(spec, raw)}")
    return "\n".join(lines)


def placement_message(
    dataset: str, variant: str | None, raw_dir: str | Path, *, sources: str | Path | None = None
) -> str:
    """Where to put a copy obtained by hand: files with size and hash, mirrors, target paths, next step."""
    return _placement(_resolve(dataset, variant, sources), Path(raw_dir), None)
