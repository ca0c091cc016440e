"""``distilvit export --layout transformers.js``: the folder transformers.js loads as a LLaVA-type model.

transformers.js (v3 and v4) runs an image-text-to-text model from three ONNX sessions and a few JSON files::

    config.json                 model_type "llava", image_token_index, text_config (layers, KV heads, head_dim),
                                transformers.js_config.dtype (the files' dtype, picked when the caller names none)
    generation_config.json      greedy, max_new_tokens, eos/pad/bos
    preprocessor_config.json    the image processor (image_processor_type, processor_class LlavaProcessor)
    processor_config.json       image_token, patch_size, num_additional_image_tokens: the <image> expansion count
    tokenizer.json, tokenizer_config.json (with <image> and a chat template rendering the trained prompt)
    onnx/vision_encoder{suffix}.onnx        pixel_values -> image_features (B, N, D)
    onnx/embed_tokens{suffix}.onnx          input_ids -> inputs_embeds
    onnx/decoder_model_merged{suffix}.onnx  inputs_embeds, attention_mask, position_ids, past_key_values.{i}.key/value
                                            -> logits, present.{i}.key/value

These are the graphs of distilvit's own bundle (:func:`distilvit.export.bundle.export_bundle`: same fusions and
quantisation recipes), renamed and re-wired: the vision graph's output becomes ``image_features`` (the projection is
inside it, so transformers.js writes projected tokens over the ``<image>`` positions), every batch axis is named
``batch_size`` (transformers.js v4 sizes the empty first-step KV cache from the graph's input metadata: the
``batch_size`` axis gets the batch, every other symbolic axis 0), weights shared between graphs in ``table.bin``
are put back into each graph (browsers only load external data they are told about), and the file suffix is the
transformers.js dtype of the ``--quantize`` option (:data:`SUFFIXES`).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import onnx

from distilvit.errors import ModelError
from distilvit.export.bundle import FILES, ONNX_SIZE_LIMIT, export_bundle
from distilvit.export.llava import prompt_template
from distilvit.model.configuration import IMAGE_TOKEN
from distilvit.training.checkpoints import publish  # the atomic folder swap of checkpoints and models

#: ``--quantize`` option -> (transformers.js dtype, file suffix)
SUFFIXES = {"none": ("fp32", ""), "fp16": ("fp16", "_fp16"), "int8": ("q8", "_quantized"), "int4": ("q4", "_q4")}
#: distilvit bundle part -> (transformers.js session file, {old tensor name: new name})
SESSIONS = {
    "vision": ("vision_encoder", {"image_tokens": "image_features"}),
    "embed_tokens": ("embed_tokens", {}),
    "decoder": ("decoder_model_merged", {}),
}
BATCH_AXIS = "batch_size"
FLOAT_BOUNDARY = {"vision": ["image_features"], "embed_tokens": ["inputs_embeds"], "decoder": ["inputs_embeds"]}


def _rename_axes(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def rewire(model: onnx.ModelProto, part: str) -> onnx.ModelProto:
    """The bundle graph of ``part`` with transformers.js's tensor and axis names; float32 boundary checked."""
    graph = model.graph
    for old, new in SESSIONS[part][1].items():
        _rename_tensor(graph, old, new)
    _rename_axes(graph, {"batch": BATCH_AXIS, "sequence": "sequence_length"})
    boundary = {v.name: v for v in [*graph.input, *graph.output]}
    for name in FLOAT_BOUNDARY[part]:
        if boundary[name].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ModelError(f"the {part} graph's {name} is not float32; transformers.js needs float32 there.")
    return model


def _patch_counts(size: tuple[int, int], patch: int | None, tokens: int) -> tuple[int, int]:
    """``(patch_size, num_additional_image_tokens)`` such that transformers.js's and transformers' LlavaProcessor
    expand ``<image>`` to ``(H // p) * (W // p) + additional == tokens`` copies (with ``"full"`` selection).

    The encoder's own patch size when the count works out (no reduction: the patches, plus a kept CLS token);
    else the patch size of the reduced grid (2x/4x); else one patch larger than the image (0 patches)."""
    height, width = size
    candidates = [p for p in ([patch, 2 * patch, 4 * patch] if patch else []) if p]
    for p in candidates:
        extra = tokens - (height // p) * (width // p)
        if 0 <= extra <= 1:
            return p, extra
    return max(height, width) + 1, tokens


def _image_processor_config(image_processor) -> dict:
    settings = image_processor.to_dict()
    kind = type(image_processor).__name__
    settings["image_processor_type"] = kind.removesuffix("Pil").removesuffix("Fast")
    settings["processor_class"] = "LlavaProcessor"
    return settings


def _model_config(model, processor, dtype: str, external: dict[str, int]) -> dict:
    config = model.config
    text = config.text_config.to_dict()
    text.setdefault("head_dim", config.text_config.hidden_size // config.text_config.num_attention_heads)
    js_config = {"dtype": dtype}
    if external:
        js_config["use_external_data_format"] = external
    return {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": int(processor.image_token_id),
        "image_seq_length": int(config.num_image_tokens),
        "vision_feature_select_strategy": "full",
        "text_config": text,
        "vision_config": config.vision_config.to_dict(),
        "transformers.js_config": js_config,
        "distilvit": {"note": "ONNX only: the projection runs inside onnx/vision_encoder*.onnx; for PyTorch use "
                      "`distilvit convert --to llava`", "prefix_reduction": config.prefix_reduction,
                      "projection_type": config.projection_type},
    }


def _save(model: onnx.ModelProto, path: Path) -> int:
    """Save ``path``; a graph over protobuf's limit keeps its weights in ``<file>_data``. Returns 0 or 1 chunks."""
    big = model.ByteSize() > ONNX_SIZE_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + "_data")
    return int(big)


def export_transformers_js(model_dir: str | Path, out_dir: str | Path, *, quantize: str = "int4",
                           exact_matmuls: bool = False, progress: bool = True, revision: str | None = None) -> dict:
    """Write the transformers.js folder for the trained prefix captioner in ``model_dir``; return its summary
    (``files`` written, ``dtype``, ``sizes_mb`` per session). An earlier export in ``out_dir`` is replaced."""
    from distilvit.model import load_captioner

    out = check_out_folder(out_dir)
    dtype, suffix = SUFFIXES[quantize]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        bundle = Path(tmp) / "bundle"
        export_bundle(model_dir, bundle, quantize=quantize, exact_matmuls=exact_matmuls, progress=progress,
                      revision=revision)
        model, processor = load_captioner(model_dir, revision=revision)
        staging = Path(tmp) / "out"
        (staging / "onnx").mkdir(parents=True)
        external, sizes = {}, {}
        for part, (session, _) in SESSIONS.items():
            graph = rewire(onnx.load(str(bundle / FILES[part])), part)  # shared table.bin read back in
            name = f"{session}{suffix}"
            if _save(graph, staging / "onnx" / f"{name}.onnx"):
                external[f"{name}.onnx"] = 1
            del graph
            sizes[session] = round(sum(p.stat().st_size for p in (staging / "onnx").glob(f"{name}.onnx*")) / 1e6, 2)
        _write_json(staging / "config.json", _model_config(model, processor, dtype, external))
        size = tuple(int(v) for v in processor.pixel_values([_blank()]).shape[-2:])
        patch, extra = _patch_counts(size, getattr(model.config.vision_config, "patch_size", None),
                                     processor.num_image_tokens)
        _write_json(staging / "processor_config.json", {
            "processor_class": "LlavaProcessor", "image_token": IMAGE_TOKEN, "patch_size": patch,
            "num_additional_image_tokens": extra, "vision_feature_select_strategy": "full"})
        generation = model.default_generation_config()
        generation.bos_token_id = model.config.text_config.bos_token_id
        generation.save_pretrained(staging)
        write_processor_files(staging, processor, chat_template=prompt_template(processor))
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        publish(staging, out)
    return {"files": files, "dtype": dtype, "sizes_mb": sizes, "total_mb": round(math.fsum(sizes.values()), 2)}


def check_out_folder(out_dir: str | Path) -> Path:
    """``--out`` of a transformers.js export: a new or empty folder, or an earlier export (replaced whole)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} is a file; give a folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / "onnx").is_dir():
        raise ModelError(f"--out {out} is not empty and holds no transformers.js export; give an empty or new folder.")
    return out


def write_processor_files(staging: Path, processor, chat_template: str | None = None, *, llava: bool = True) -> None:
    """``preprocessor_config.json`` and the tokenizer files as transformers.js reads them (the chat template and
    the space clean-up flag in ``tokenizer_config.json``); ``llava``: the image processor belongs to a
    ``LlavaProcessor`` (else to no processor class: the image-to-text layout)."""
    image_config = _image_processor_config(processor.image_processor)
    if not llava:
        image_config.pop("processor_class")
    _write_json(staging / "preprocessor_config.json", image_config)
    if chat_template is not None:
        processor.tokenizer.chat_template = chat_template
    processor.tokenizer.save_pretrained(staging)
    tokenizer_config = json.loads((staging / "tokenizer_config.json").read_text())
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template  # transformers.js reads it here, not from chat_template.jinja
    tokenizer_config["clean_up_tokenization_spaces"] = _cleans_up_spaces(processor.tokenizer)
    _write_json(staging / "tokenizer_config.json", tokenizer_config)


def _cleans_up_spaces(tokenizer) -> bool:
    """Whether ``transformers`` removes spaces before punctuation when decoding (as :class:`OnnxCaptioner`: the
    config's flag, never for BPE); transformers.js reads the flag from ``tokenizer_config.json`` and must agree."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    bpe = backend is not None and type(backend.model).__name__ == "BPE"
    return bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)) and not bpe


def _blank():
    from PIL import Image

    return Image.new("RGB", (64, 64))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
