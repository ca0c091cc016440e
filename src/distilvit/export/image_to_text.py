"""``distilvit export --layout image-to-text``: a prefix captioner as the encoder-decoder pair that transformers.js's
``image-to-text`` pipeline (``AutoModelForVision2Seq``, as Firefox's ``moz-image-to-text`` runs it) loads::

    config.json                 model_type "vision-encoder-decoder", encoder/decoder configs, decoder_start_token_id
    generation_config.json      greedy, decoder_start_token_id, eos/pad
    preprocessor_config.json    the image processor
    tokenizer.json, tokenizer_config.json
    onnx/encoder_model{suffix}.onnx          pixel_values -> last_hidden_state (B, N, D): the projected image tokens
    onnx/decoder_model_merged{suffix}.onnx   input_ids, encoder_hidden_states, past_key_values.{i}.key/value
                                             -> logits, present.{i}.key/value

The pipeline starts generation from ``decoder_start_token_id`` and feeds the encoder output to every decoder call.
The decoder graph is the bundle's ``embed_tokens`` and ``decoder`` graphs joined by a few glue nodes
(:func:`glue_decoder`): on the first step (empty cache) it lays out distilvit's prompt around the start token,

    [start token = first leading token] [rest of the leading tokens] [image tokens = encoder_hidden_states] [prompt]

and on later steps embeds the one new token; ``attention_mask`` and ``position_ids`` are computed from the cache
length, since the pipeline passes neither. The leading and prompt embeddings are constants (looked up once by the
bundle's own quantised embedding graph).

Empty-cache sizing: transformers.js 4 reads it from the graph (every symbolic axis but ``batch_size`` is 0); 3.x
computes ``[batch, num_heads, 0, hidden_size / num_heads]`` from the ``decoder`` config with ``num_heads`` the LM's
key/value heads, which is wrong for grouped-query LMs (SmolLM2: 576 / 3 = 192, not 64). The ``decoder`` block of
``config.json`` therefore states ``hidden_size`` as ``num_key_value_heads * head_dim`` (it sizes nothing else: the
weights are in the graphs) and keeps the LM's own width as ``lm_hidden_size``.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from distilvit.errors import ModelError
from distilvit.export.bundle import FILES, ONNX_SIZE_LIMIT, export_bundle
from distilvit.export.encoder_decoder_onnx import export_encoder_decoder
from distilvit.export.transformers_js import (
    BATCH_AXIS,
    SUFFIXES,
    _rename_axes,
    _rename_tensor,
    _save,
    _write_json,
    check_out_folder,
    write_processor_files,
)
from distilvit.model.encoder_decoder import is_encoder_decoder
from distilvit.training.checkpoints import publish  # the atomic folder swap of checkpoints and models


def _embed_constant(embed_path: Path, ids: list[int]) -> np.ndarray:
    """``(1, len(ids), D)`` embeddings of ``ids`` by the bundle's own (possibly quantised) ``embed_tokens`` graph."""
    session = ort.InferenceSession(str(embed_path), providers=["CPUExecutionProvider"])
    return session.run(["inputs_embeds"], {"input_ids": np.asarray([ids], dtype=np.int64)})[0].astype(np.float32)


def _prefixed(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> None:
    """Rename every tensor of ``graph`` except ``keep`` to ``prefix + name`` (to merge it into another graph)."""
    names = {n for node in graph.node for n in [*node.input, *node.output] if n} | {i.name for i in graph.initializer}
    rename = {n: prefix + n for n in names if n not in keep}
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.name = prefix + node.name
    for tensor in graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    for value in graph.value_info:
        value.name = rename.get(value.name, value.name)


def _glue_nodes(before: np.ndarray, after: np.ndarray, text: str, uses_positions: bool) -> tuple[list, list]:
    """Nodes (and initializers) computing ``inputs_embeds``, ``attention_mask`` (and ``position_ids``) from the
    embedded ``text`` ids, ``encoder_hidden_states`` and the cache length (see the module docstring)."""
    c = lambda name, value: numpy_helper.from_array(np.asarray(value), "glue/" + name)  # noqa: E731
    inits = [c("zero", np.int64(0)), c("one", np.int64(1)), c("axis0", np.array([0], dtype=np.int64)),
             c("ones_b11", np.array([1, 1], dtype=np.int64))]
    n = helper.make_node
    nodes = [
        n("Shape", ["past_key_values.0.key"], ["glue/past_shape"]),
        n("Gather", ["glue/past_shape", "glue/two"], ["glue/past_len"], axis=0),
        n("Shape", ["encoder_hidden_states"], ["glue/enc_shape"]),
        n("Gather", ["glue/enc_shape", "glue/axis0"], ["glue/batch"], axis=0),  # (1,)
        n("Concat", ["glue/batch", "glue/ones_b11"], ["glue/expand_to"], axis=0),  # (B, 1, 1)
    ]
    inits.append(c("two", np.int64(2)))
    for name, value in (("before", before), ("after", after)):
        if value.shape[1]:
            inits.append(c(name, value))
            nodes.append(n("Expand", ["glue/" + name, "glue/expand_to"], [f"glue/{name}_b"]))
    parts = ([["glue/before_b"]] if before.shape[1] else []) + [["encoder_hidden_states"]] + (
        [["glue/after_b"]] if after.shape[1] else [])
    nodes += [
        n("Concat", [p[0] for p in parts], ["glue/middle"], axis=1),
        n("Shape", ["glue/middle"], ["glue/middle_shape"]),
        n("Gather", ["glue/middle_shape", "glue/one"], ["glue/middle_len"], axis=0),
        n("Equal", ["glue/past_len", "glue/zero"], ["glue/first"]),
        n("Cast", ["glue/first"], ["glue/first_i"], to=TensorProto.INT64),
        n("Mul", ["glue/middle_len", "glue/first_i"], ["glue/keep"]),  # whole prefix on the first step, else none
        n("Range", ["glue/zero", "glue/keep", "glue/one"], ["glue/keep_idx"]),
        n("Gather", ["glue/middle", "glue/keep_idx"], ["glue/middle_kept"], axis=1),
        n("Concat", [text, "glue/middle_kept"], ["inputs_embeds"], axis=1),
        n("Shape", ["inputs_embeds"], ["glue/seq_shape"]),
        n("Gather", ["glue/seq_shape", "glue/one"], ["glue/seq_len"], axis=0),
        n("Add", ["glue/past_len", "glue/seq_len"], ["glue/total"]),
        n("Unsqueeze", ["glue/total", "glue/axis0"], ["glue/total_1"]),
        n("Concat", ["glue/batch", "glue/total_1"], ["glue/mask_shape"], axis=0),
        n("ConstantOfShape", ["glue/mask_shape"], ["attention_mask"],
          value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
    ]
    if uses_positions:
        nodes += [
            n("Range", ["glue/past_len", "glue/total", "glue/one"], ["glue/positions"]),
            n("Unsqueeze", ["glue/positions", "glue/axis0"], ["glue/positions_1"]),
            n("Unsqueeze", ["glue/seq_len", "glue/axis0"], ["glue/seq_len_1"]),
            n("Concat", ["glue/batch", "glue/seq_len_1"], ["glue/pos_shape"], axis=0),
            n("Expand", ["glue/positions_1", "glue/pos_shape"], ["position_ids"]),
        ]
    return nodes, inits


def _dedupe_initializers(graph: onnx.GraphProto) -> None:
    """Keep one copy of initializers with equal type, shape and bytes (the embedding table and the tied head)."""
    seen: dict[tuple, str] = {}
    rename = {}
    kept = []
    for tensor in graph.initializer:
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(tensor.raw_data).digest()) if tensor.raw_data \
            else None
        if key is not None and key in seen and len(tensor.raw_data) >= 64:
            rename[tensor.name] = seen[key]
            continue
        if key is not None:
            seen[key] = tensor.name
        kept.append(tensor)
    if not rename:
        return
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]


def glue_decoder(embed: onnx.ModelProto, decoder: onnx.ModelProto, before: np.ndarray, after: np.ndarray,
                 width: int) -> onnx.ModelProto:
    """One graph ``(input_ids, encoder_hidden_states, past...) -> (logits, present...)`` from the bundle's
    ``embed_tokens`` and ``decoder`` graphs."""
    graph = decoder.graph
    uses_positions = any("position_ids" in node.input for node in graph.node)
    embed_graph = embed.graph
    _prefixed(embed_graph, "embed/", keep={"input_ids"})
    text = "embed/inputs_embeds"
    glue, inits = _glue_nodes(before, after, text, uses_positions)
    nodes = list(embed_graph.node) + glue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(list(embed_graph.initializer) + inits)
    graph.value_info.extend(embed_graph.value_info)
    past = [i for i in graph.input if i.name.startswith("past_key_values.")]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH_AXIS, "decoder_sequence_length"])
    states = helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT,
                                           [BATCH_AXIS, "encoder_sequence_length", width])
    del graph.input[:]
    graph.input.extend([ids, states, *past])
    _dedupe_initializers(graph)
    known = {d.domain: d.version for d in decoder.opset_import}
    for opset in embed.opset_import:
        if opset.domain not in known:
            decoder.opset_import.append(opset)
    _rename_axes(graph, {"batch": BATCH_AXIS})
    if decoder.ByteSize() < ONNX_SIZE_LIMIT:
        onnx.checker.check_model(decoder)
    return decoder


def _start_and_rest(processor) -> tuple[int, list[int], list[int]]:
    """``(start token, leading ids after it, prompt ids after the image tokens)``."""
    ids = processor.prompt_ids()
    first_image = ids.index(processor.image_token_id)
    lead, rest = ids[:first_image], ids[first_image + processor.num_image_tokens:]
    if not lead or lead[0] not in processor.tokenizer.all_special_ids:
        raise ModelError("the image-to-text layout starts generation from the prompt's first token, which must be a "
                         "special token (BOS) that decoding drops; this model's prompt does not start with one.")
    if processor.image_token_id in rest:
        raise ModelError("the image-to-text layout holds one image per prompt; this model's prompt has several.")
    return lead[0], lead[1:], rest


def _decoder_config(text_config, dims: dict) -> dict:
    config = text_config.to_dict()
    config["lm_hidden_size"] = config["hidden_size"]
    config["hidden_size"] = dims["num_kv_heads"] * dims["head_dim"]  # transformers.js 3.x: head width = this / kv heads
    config["head_dim"] = dims["head_dim"]
    return config


def export_image_to_text(model_dir: str | Path, out_dir: str | Path, *, quantize: str = "int4",
                         exact_matmuls: bool = False, progress: bool = True, revision: str | None = None) -> dict:
    """Write the image-to-text folder for the prefix captioner in ``model_dir``; return its summary (``files``,
    ``dtype``, ``sizes_mb`` per session). An earlier export in ``out_dir`` is replaced."""
    from distilvit.model import load_captioner

    out = check_out_folder(out_dir)
    dtype, suffix = SUFFIXES[quantize]
    out.parent.mkdir(parents=True, exist_ok=True)
    model, processor = load_captioner(model_dir, revision=revision)
    if is_encoder_decoder(model):  # the cross-attention design: exported as it is (encoder_decoder_onnx.py)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
            staging = Path(tmp) / "out"
            sizes = export_encoder_decoder(model, processor, staging, quantize)
            files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            publish(staging, out)
        return {"files": files, "dtype": "fp32", "sizes_mb": sizes, "total_mb": round(math.fsum(sizes.values()), 2)}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        bundle = Path(tmp) / "bundle"
        manifest = export_bundle(model_dir, bundle, quantize=quantize, exact_matmuls=exact_matmuls, progress=progress,
                                 revision=revision)
        start, lead_rest, prompt_rest = _start_and_rest(processor)
        embed_path = bundle / FILES["embed_tokens"]
        width = manifest["decoder"]["hidden_size"]
        before = _embed_constant(embed_path, lead_rest) if lead_rest else np.zeros((1, 0, width), np.float32)
        after = _embed_constant(embed_path, prompt_rest) if prompt_rest else np.zeros((1, 0, width), np.float32)
        staging = Path(tmp) / "out"
        (staging / "onnx").mkdir(parents=True)
        encoder = onnx.load(str(bundle / FILES["vision"]))
        _rename_tensor(encoder.graph, "image_tokens", "last_hidden_state")
        _rename_axes(encoder.graph, {"batch": BATCH_AXIS})
        decoder = glue_decoder(onnx.load(str(embed_path)), onnx.load(str(bundle / FILES["decoder"])), before, after,
                               width)
        sizes, external = {}, {}
        for session, graph in (("encoder_model", encoder), ("decoder_model_merged", decoder)):
            name = f"{session}{suffix}"
            if _save(graph, staging / "onnx" / f"{name}.onnx"):
                external[f"{name}.onnx"] = 1
            sizes[session] = round(sum(p.stat().st_size for p in (staging / "onnx").glob(f"{name}.onnx*")) / 1e6, 2)
        del encoder, decoder
        generation = model.default_generation_config()
        generation.decoder_start_token_id = start
        generation.bos_token_id = start
        js_config = {"dtype": dtype, **({"use_external_data_format": external} if external else {})}
        _write_json(staging / "config.json", {
            "model_type": "vision-encoder-decoder", "architectures": ["VisionEncoderDecoderModel"],
            "is_encoder_decoder": True, "encoder": model.config.vision_config.to_dict(),
            "decoder": _decoder_config(model.config.text_config, manifest["decoder"]),
            "decoder_start_token_id": start, "bos_token_id": start, "eos_token_id": generation.eos_token_id,
            "pad_token_id": generation.pad_token_id, "transformers.js_config": js_config,
            "distilvit": {"note": "ONNX only: a prefix captioner (image tokens from onnx/encoder_model*.onnx are the "
                          "decoder LM's prompt), not a cross-attention model"}})
        generation.save_pretrained(staging)
        write_processor_files(staging, processor, llava=False)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        publish(staging, out)
    return {"files": files, "dtype": dtype, "sizes_mb": sizes, "total_mb": round(math.fsum(sizes.values()), 2)}

