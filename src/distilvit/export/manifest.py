"""The ``manifest.json`` of an ONNX bundle: writing it, and reading it back with clear errors.

The format is specified in ``docs/export.md``. This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.errors import ModelError

FORMAT = "distilvit-onnx"
FORMAT_VERSION = 2  # 2: graphs may read weights from shared external-data files (``external_data``)
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
PARTS = ("vision", "embed_tokens", "decoder")
REQUIRED_KEYS = (
    "format", "format_version", "quantization", "files", "sizes_mb", "image", "prompt_ids", "image_token_id",
    "image_token_start", "num_image_tokens", "eos_token_ids", "pad_token_id", "decoder", "generation",
)
IMAGE_KEYS = ("size", "do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
DECODER_KEYS = ("num_layers", "num_kv_heads", "head_dim", "hidden_size", "vocab_size")
QUANTIZE_OPTIONS = ("none", "fp16", "int8", "int4")  # `distilvit export --quantize`; recipes in quantize.py
DEFAULT_QUANTIZE = "int4"


class BundleError(ModelError):
    """The folder is not a usable ONNX bundle (missing, incomplete or corrupt)."""


def file_size_mb(path: Path) -> float:
    """Size of an ONNX file plus its external data files (``<name>.data``/``<name>_data``), in MB (10^6 bytes)."""
    total = path.stat().st_size
    for extra in path.parent.glob(path.name + "*"):
        if extra != path and extra.is_file():
            total += extra.stat().st_size
    return round(total / 1e6, 2)


def shared_files(manifest: dict) -> list[str]:
    """The external-data files that graphs share (``manifest["external_data"]``), each once, in order."""
    names: list[str] = []
    for part_files in manifest.get("external_data", {}).values():
        names += [name for name in part_files if name not in names]
    return names


def part_sizes_mb(bundle_dir: Path, files: dict[str, str], external_data: dict[str, list[str]] | None = None
                  ) -> dict[str, float]:
    """``{"vision": MB, "embed_tokens": MB, "decoder": MB, "shared": MB, "total": MB}``: each graph file (with
    its own ``<name>.data``), the shared external-data files counted once, and their sum."""
    sizes = {part: file_size_mb(bundle_dir / name) for part, name in files.items()}
    shared = shared_files({"external_data": external_data or {}})
    sizes["shared"] = round(sum((bundle_dir / name).stat().st_size for name in shared) / 1e6, 2)
    sizes["total"] = round(sum(sizes.values()), 2)
    return sizes


def write_manifest(bundle_dir: Path, manifest: dict) -> Path:
    path = Path(bundle_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _not_a_bundle(folder: Path, why: str) -> BundleError:
    return BundleError(
        f"{folder} is not a distilvit ONNX bundle ({why}). Create one with `distilvit export MODEL --out {folder}`."
    )


def _load_json(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"the bundle manifest {path} is corrupt ({err}); re-export the model.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _not_a_bundle(folder, f"{MANIFEST} has no \"format\": \"{FORMAT}\"")
    return manifest


def _check_keys(manifest: dict, path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    missing += [f"image.{k}" for k in IMAGE_KEYS if k not in manifest.get("image", {})]
    missing += [f"decoder.{k}" for k in DECODER_KEYS if k not in manifest.get("decoder", {})]
    missing += [f"files.{k}" for k in PARTS if k not in manifest.get("files", {})]
    if missing:
        raise BundleError(f"the bundle manifest {path} is corrupt: it lacks {', '.join(missing)}; re-export the model.")
    external = manifest.get("external_data", {})
    if not isinstance(external, dict) or not all(
            isinstance(names, list) and all(isinstance(n, str) and n and Path(n).name == n for n in names)
            for names in external.values()):
        raise BundleError(f"the bundle manifest {path} is corrupt: \"external_data\" must map parts to lists of file "
                          "names in the bundle folder; re-export the model.")


def read_manifest(bundle_dir: str | Path) -> dict:
    """Read and check ``bundle_dir/manifest.json``; every file it names must exist.

    Raises:
        BundleError: the folder does not exist, is no bundle, its manifest is corrupt or from a newer
            format version, or a graph, tokenizer or shared external-data file is missing.
    """
    folder = Path(bundle_dir).expanduser()
    if not folder.is_dir():
        raise BundleError(f"ONNX bundle folder {folder} does not exist.")
    if not (folder / MANIFEST).is_file():
        raise _not_a_bundle(folder, f"no {MANIFEST}")
    manifest = _load_json(folder)
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{folder} has bundle format version {version!r}; this distilvit reads version {FORMAT_VERSION} "
            "or older. Upgrade distilvit or re-export the model with this version."
        )
    _check_keys(manifest, folder / MANIFEST)
    for name in [*(manifest["files"][p] for p in PARTS), TOKENIZER]:
        if not (folder / name).is_file():
            raise BundleError(f"the bundle {folder} is incomplete: {name} is missing. Re-export the model.")
    for name in shared_files(manifest):
        if not (folder / name).is_file():
            readers = [manifest["files"].get(p, p) for p, names in manifest["external_data"].items() if name in names]
            raise BundleError(f"the bundle {folder} is incomplete: {name} (weights read by {' and '.join(readers)}) "
                              "is missing. Re-export the model, or copy the whole bundle folder.")
    return manifest
