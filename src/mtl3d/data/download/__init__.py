"""Verified downloads of the real datasets' archives (NYUD-v2, PASCAL-Context) and their safe extraction.

``sources.yaml`` lists, per dataset and variant, the archive(s), their mirrors and what is known about them.
A download goes to ``<name>.part`` and is checked before it takes its final name. HTTP downloads resume
from the .part only with the validator (strong ETag or Last-Modified) its bytes came with, sent as
If-Range, so a file that changed upstream is fetched whole instead of spliced; without one they start
over. Checks, in order: the published size; the whole archive read in one pass with the hash (gzip CRC
and length, the tar read to its end-of-archive blocks, every zip member's CRC, no unsafe member, the
variant's top folder and required entries); the pinned sha256 if there is one, else the hash recorded
in ``raw_dir/mtl3d-sources.lock.json``, else trust on first use (recorded there). The lock only ever
records an archive that passed all of these; a file they prove bad is removed, with the next step.
Transfers use pooch (HTTP) and gdown (Google Drive).

Modules: ``sources`` (``sources.yaml``, the placement message), ``lock`` (the lock file), ``transfer``
(HTTP / Google Drive into ``.part``), ``checks`` (size, format, hash), ``extract`` (safe extraction),
``fetch`` (``download``, ``verify``, the workflow marker) and ``raw`` (the folder ``prepare`` reads).
"""

from mtl3d.data.download.extract import safe_extract
from mtl3d.data.download.fetch import download, download_verified, verify, write_marker
from mtl3d.data.download.lock import LOCK_NAME, TOFU, VerifiedFile
from mtl3d.data.download.raw import source_dir
from mtl3d.data.download.sources import (
    KINDS,
    SOURCES_ENV,
    FileSpec,
    Mirror,
    SourceUnavailable,
    VariantSpec,
    VerificationError,
    dataset_names,
    default_variant,
    placement_message,
    variant_names,
    variant_spec,
)

__all__ = [
    "KINDS",
    "LOCK_NAME",
    "SOURCES_ENV",
    "TOFU",
    "FileSpec",
    "Mirror",
    "SourceUnavailable",
    "VariantSpec",
    "VerificationError",
    "VerifiedFile",
    "dataset_names",
    "default_variant",
    "download",
    "download_verified",
    "placement_message",
    "safe_extract",
    "source_dir",
    "variant_names",
    "variant_spec",
    "verify",
    "write_marker",
]
