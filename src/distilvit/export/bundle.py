"""``export_bundle``: a trained model folder -> an ONNX bundle folder (``docs/export.md``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
from tqdm.auto import tqdm

from distilvit import __version__
from distilvit.errors import ModelError
from distilvit.export import attention, graphs
from distilvit.export.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PARTS,
    QUANTIZE_OPTIONS,
    part_sizes_mb,
    write_manifest,
)
from distilvit.export.preprocess import RESAMPLE_NAMES
from distilvit.export.quantize import RECIPES, apply_recipe, exact_recipes
from distilvit.export.shared import share_weights
from distilvit.export.simplify import decoder_probes, simplify_shapes
from distilvit.hub.resolve import is_hub_id
from distilvit.model.modeling import DistilViTForCaptioning

FILES = {"vision": "vision.onnx", "embed_tokens": "embed_tokens.onnx", "decoder": "decoder.onnx"}
ONNX_SIZE_LIMIT = 2_000_000_000  # protobuf limit: larger graphs keep their weights in `<file>.data`


def image_settings(image_processor) -> dict:
    """The manifest's ``image`` block from a Hugging Face image processor that resizes to a fixed size."""
    size = dict(getattr(image_processor, "size", None) or {})
    if getattr(image_processor, "do_center_crop", False) or "height" not in size:
        raise ModelError(
            f"cannot export the image preprocessing of {type(image_processor).__name__} (size {size}): bundles "
            "support processors that resize straight to a fixed height x width (SigLIP, ViT, the scratch presets), "
            "not shortest-edge resizing with a centre crop."
        )
    resample = getattr(image_processor, "resample", None)
    return {
        "size": [int(size["height"]), int(size["width"])],
        "do_resize": bool(getattr(image_processor, "do_resize", True)),
        "resample": RESAMPLE_NAMES[int(resample if resample is not None else 2)],
        "do_rescale": bool(image_processor.do_rescale),
        "rescale_factor": float(image_processor.rescale_factor),
        "do_normalize": bool(image_processor.do_normalize),
        "image_mean": [float(v) for v in _three(image_processor.image_mean)],
        "image_std": [float(v) for v in _three(image_processor.image_std)],
    }


def _three(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * 3


def _eos_ids(model, processor) -> list[int]:
    eos = model.default_generation_config().eos_token_id
    if eos is None:
        eos = processor.tokenizer.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def build_manifest(model, processor, dims: dict, recipes: dict, source: str) -> dict:
    """Everything but ``sizes_mb`` (filled in once the files are written)."""
    prompt = processor.prompt_ids()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quantization": {part: recipes[part].label for part in PARTS},
        "quantization_detail": {part: recipes[part].detail() for part in PARTS},
        "files": dict(FILES),
        "external_data": {},
        "sizes_mb": {},
        "image": image_settings(processor.image_processor),
        "prompt_ids": [int(i) for i in prompt],
        "image_token_id": int(processor.image_token_id),
        "image_token_start": prompt.index(processor.image_token_id),
        "num_image_tokens": int(processor.num_image_tokens),
        "eos_token_ids": _eos_ids(model, processor),
        "pad_token_id": int(processor.pad_token_id),
        "decoder": dims,
        "generation": {"max_new_tokens": int(model.default_generation_config().max_new_tokens)},
        "source_model": source,
        "distilvit_version": __version__,
    }


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} is a file; give a folder for the bundle.")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ModelError(f"--out {out} is not empty and holds no bundle; give an empty or new folder.")


def _save(model: onnx.ModelProto, path: Path) -> None:
    big = model.ByteSize() > ONNX_SIZE_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + ".data")


def export_bundle(model_dir: str | Path, out_dir: str | Path, *, quantize: str = "int4", exact_matmuls: bool = False,
                  progress: bool = True, revision: str | None = None) -> dict:
    """Export the trained model in ``model_dir`` to an ONNX bundle in ``out_dir``; return the manifest.

    ``exact_matmuls``: keep the activations float32 in every matmul (no int8 vision matmuls, ``MatMulNBits``
    at ``accuracy_level`` 0): slower, the outputs closest to fp32 the recipe's weights allow.

    The LoRA adapters are merged into the LM first (in the freshly loaded copy; ``model_dir`` is untouched).
    An existing bundle in ``out_dir`` is replaced.
    """
    if quantize not in QUANTIZE_OPTIONS:
        raise ModelError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE_OPTIONS)}.")
    from distilvit.model import load_captioner

    out = Path(out_dir).expanduser()
    _prepare_out_dir(out)
    model, processor = load_captioner(model_dir, revision=revision)  # model_dir may be a Hub id
    if not isinstance(model, DistilViTForCaptioning):
        raise ModelError(f"{model_dir} is an encoder-decoder captioner; `distilvit export` writes bundles of the "
                         "prefix design (vision encoder -> projection -> decoder-only LM) only.")
    recipes = exact_recipes(RECIPES[quantize]) if exact_matmuls else RECIPES[quantize]
    if model.has_lora() and recipes["decoder"].merge_lora:
        model.merge_lora()
    dims = graphs.decoder_dims(model.language_model)
    gqa = attention.supports_gqa(model.language_model)
    dims["attention"] = "GroupQueryAttention" if gqa else "eager"
    dims["max_positions"] = (attention.max_positions(model.language_model) if gqa
                             else getattr(model.language_model.config, "max_position_embeddings", None))
    source = f"{model_dir}@{revision or 'main'}" if is_hub_id(str(model_dir)) else str(Path(model_dir).expanduser().resolve())
    manifest = build_manifest(model, processor, dims, recipes, source=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        steps = [("vision", lambda p: graphs.export_vision(model, p, tuple(manifest["image"]["size"]))),
                 ("embed_tokens", lambda p: graphs.export_embed_tokens(model, p)),
                 ("decoder", lambda p: graphs.export_decoder(model.language_model, p, dims, gqa=gqa))]
        held = {}  # embed_tokens is saved with the decoder: they may share the table (shared.py)
        for part, export in tqdm(steps, desc=f"exporting ({quantize})", unit="graph", disable=not progress):
            raw = Path(tmp) / f"{part}.fp32.onnx"
            export(raw)
            graph = onnx.load(str(raw))
            if part == "decoder":  # fold the shape arithmetic of the dynamic axes (outputs bit-identical)
                graph = simplify_shapes(graph, decoder_probes(dims))
            held[part] = apply_recipe(graph, recipes[part], part, vocab_size=dims["vocab_size"])
            del graph
            raw.unlink()
            if part == "vision":
                _save(held.pop(part), staging / FILES[part])
        manifest["external_data"] = share_weights(held, staging)
        for part, graph in held.items():
            _save(graph, staging / FILES[part])
        del held
        processor.tokenizer.save_pretrained(staging)
        manifest["sizes_mb"] = part_sizes_mb(staging, FILES, manifest["external_data"])
        write_manifest(staging, manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return manifest
