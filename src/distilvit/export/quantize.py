"""Shrinking the exported fp32 graphs, part by part. Recipes per ``--quantize`` option: :data:`RECIPES`;
the measurements behind them: ``docs/export.md``.

Methods:

* ``fp32``: unchanged.
* ``fp16``: weights stored as float16 with a ``Cast`` back to float32 in front of their users; onnxruntime
  folds the casts when it loads the graph, so compute stays float32 and only the file halves.
* ``symmetric`` (vision, 4 bits): codes -8..7 and a float16 scale per block, no offsets (:mod:`.nbits`);
  ``rest="fp16"`` stores the float weights left over (the patch convolution, position embeddings) as ``fp16``.
* ``affine``: weight-only block-wise quantisation with a float offset per block (:mod:`.nbits`), run by
  onnxruntime's ``MatMulNBits`` with float32 activations. In the decoder the output head gets ``head``
  (``symmetric8``) and the embedding table of ``embed_tokens`` is ``symmetric8`` too.

In the decoder, LoRA adapters stay *unmerged* for ``affine`` recipes: the adapters' change to a weight
is a few percent of one 4-bit step, so merging then quantising rounds the fine-tuning away (measured: 54%
of the demo model's captions kept). The base weights are quantised and each adapter runs as a small side branch
(``x @ A @ B``, stored as ``lora``: fp32 or fp16).

Compute (``int4`` only; :func:`exact_recipes`, ``--exact-matmuls``, turns it off): ``accuracy_level`` 4 on every
``MatMulNBits`` (int8 activations inside the kernel) and, with ``compute="int8"``, the vision encoder's
``symmetric`` matmuls as int8 matmuls on weights that onnxruntime computes from the stored 4-bit codes at load
time (:meth:`GraphEditor.symmetric4_int8_matmul`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from distilvit.export.nbits import GraphEditor


@dataclass(frozen=True)
class PartRecipe:
    """How one graph is stored (decoder-only fields: ``head``, ``lora``)."""

    method: str = "fp32"  # fp32 | fp16 | affine | symmetric (4-bit) | symmetric8
    bits: int | None = None
    block_size: int | None = None
    head: str | None = None  # decoder output head: symmetric8 (None: as the body)
    lora: str | None = None  # unmerged LoRA side branches: fp32 | fp16
    rest: str | None = None  # float weights left unquantised (convolutions, position embeddings): fp16
    projection: str | None = None  # vision projection: affine (4-bit, blocks of 32); None: as the encoder
    compute: str | None = None  # vision encoder's symmetric matmuls: int8 (folded int8 weights, int8 activations)
    accuracy_level: int | None = None  # MatMulNBits accuracy_level (4: int8 activations); None: 0 (float32)

    @property
    def merge_lora(self) -> bool:
        """Fold LoRA into the weights before export (float recipes) or keep it as side branches."""
        return self.lora is None

    @property
    def label(self) -> str:
        """Short name for ``manifest["quantization"]``: ``fp32``, ``fp16``, ``int8``, ``int4``."""
        named = {"fp32": "fp32", "fp16": "fp16", "symmetric8": "int8"}
        return named.get(self.method, f"int{self.bits}")

    def detail(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


FP32, FP16 = PartRecipe(), PartRecipe("fp16")
TABLE8 = PartRecipe("symmetric8", bits=8, block_size=32)
RECIPES: dict[str, dict[str, PartRecipe]] = {
    "none": {"vision": FP32, "embed_tokens": FP32, "decoder": FP32},
    "fp16": {"vision": FP16, "embed_tokens": FP16, "decoder": FP16},
    "int8": {
        "vision": PartRecipe("affine", bits=8, block_size=32),
        "embed_tokens": TABLE8,
        "decoder": PartRecipe("affine", bits=8, block_size=32, head="symmetric8", lora="fp32"),
    },
    "int4": {  # the default
        # encoder: symmetric 4-bit, blocks of 64 (15.1% token error vs affine-32's 13.9% on a random SigLIP-size
        # encoder, 8 MB smaller: benchmarks/results/vision_quantization.md);
        # projection: affine, blocks of 32 (symmetric changed 6% of the demo model's captions); docs/export.md
        # compute int8: the encoder's matmuls run as int8 matmuls on weights folded from the 4-bit codes at load
        # time (vision 1.7x faster); accuracy_level 4: int8 activations in every MatMulNBits (decode steps 2x
        # faster; 97 of 100 demo captions as fp32, 94 with the projection left at level 0: docs/export.md)
        "vision": PartRecipe("symmetric", bits=4, block_size=64, rest="fp16", projection="affine", compute="int8",
                             accuracy_level=4),
        "embed_tokens": TABLE8,
        "decoder": PartRecipe("affine", bits=4, block_size=32, head="symmetric8", lora="fp16", accuracy_level=4),
    },
}


def exact_recipes(recipes: dict[str, PartRecipe]) -> dict[str, PartRecipe]:
    """``recipes`` with float32 activations everywhere (``--exact-matmuls``): no int8 compute, accuracy_level 0."""
    return {part: replace(recipe, compute=None, accuracy_level=None) for part, recipe in recipes.items()}


def weights_to_fp16(model: onnx.ModelProto, names: set[str] | None = None, min_elements: int = 1024) -> onnx.ModelProto:
    """Store float32 initializers (``names``, default: all of at least ``min_elements`` values) as float16 +
    a ``Cast`` back to float32."""
    graph = model.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        chosen = tensor.name in names if names is not None else int(np.prod(tensor.dims)) >= min_elements
        if tensor.data_type != onnx.TensorProto.FLOAT or not chosen:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=onnx.TensorProto.FLOAT,
                                      name=tensor.name + "_cast"))
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    return model


def _weighted_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    constants = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and len(constants.get(n.input[1], ())) == 2]


def decoder_groups(model: onnx.ModelProto, vocab_size: int) -> dict[str, list[onnx.NodeProto]]:
    """The decoder's weighted ``MatMul`` nodes as ``{"head": [...], "lora": [...], "body": [...]}``.

    ``head``: weight with ``vocab_size`` outputs. ``lora``: adapter matmuls, i.e. nodes inside a module that
    also holds a ``base_layer`` node (peft's wrapped layers keep their scope names in the export).
    """
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    nodes = _weighted_matmuls(model)
    wrapped = {n.name.split("/base_layer/")[0] + "/" for n in nodes if "/base_layer/" in n.name}
    groups: dict[str, list] = {"head": [], "lora": [], "body": []}
    for node in nodes:
        if shapes[node.input[1]][-1] == vocab_size:
            groups["head"].append(node)
        elif "/base_layer/" not in node.name and any(node.name.startswith(p) for p in wrapped):
            groups["lora"].append(node)
        else:
            groups["body"].append(node)
    return groups


def _quantizable(shapes: dict, node: onnx.NodeProto, block: int) -> bool:
    inputs = shapes[node.input[1]][0]
    return inputs % block == 0


def affine_quantize(model: onnx.ModelProto, nodes: list[onnx.NodeProto], recipe: PartRecipe,
                    head: list[onnx.NodeProto] = ()) -> onnx.ModelProto:
    """``nodes`` -> ``affine`` codes, ``head`` -> ``symmetric8`` (weights whose input size is no multiple
    of the block size stay float32)."""
    editor = GraphEditor(model)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in nodes:
        if _quantizable(shapes, node, recipe.block_size):
            editor.affine_matmul(node, recipe.bits, recipe.block_size)
    for node in head:
        if _quantizable(shapes, node, recipe.block_size):
            editor.symmetric8_matmul(node, recipe.block_size)
    return editor.finish()


def quantize_decoder(model: onnx.ModelProto, recipe: PartRecipe, vocab_size: int) -> onnx.ModelProto:
    """Body ``affine``, head ``symmetric8``, unmerged LoRA branches kept at ``lora`` precision."""
    groups = decoder_groups(model, vocab_size)
    lora_weights = {n.input[1] for n in groups["lora"]}
    head = groups["head"] if recipe.head == "symmetric8" else []
    body = groups["body"] + ([] if head else groups["head"])
    model = affine_quantize(model, body, recipe, head)
    if recipe.lora == "fp16" and lora_weights:
        model = weights_to_fp16(model, names=lora_weights)
    return set_accuracy_level(model, recipe.accuracy_level)


def set_accuracy_level(model: onnx.ModelProto, level: int | None) -> onnx.ModelProto:
    """Set ``accuracy_level`` on every ``MatMulNBits`` (``None``: leave them at the default 0). Level 4 quantises
    the activations to int8 per block inside the kernel (onnxruntime's CPU provider; onnxruntime-web's WebAssembly
    kernel computes such nodes in float32: ``tests/test_browser.py``)."""
    if level is None:
        return model
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            node.ClearField("attribute")
            node.attribute.extend(kept + [helper.make_attribute("accuracy_level", level)])
    return model


def apply_recipe(model: onnx.ModelProto, recipe: PartRecipe, part: str, *, vocab_size: int | None = None
                 ) -> onnx.ModelProto:
    """Return graph ``part`` (``vision``/``embed_tokens``/``decoder``) stored as ``recipe`` says."""
    if recipe.method == "fp32":
        return model
    if recipe.method == "fp16":
        return weights_to_fp16(model)
    if recipe.method == "symmetric8" and part == "embed_tokens":
        editor = GraphEditor(model)
        tables = {t.name for t in model.graph.initializer if len(t.dims) == 2}
        for node in model.graph.node:
            if node.op_type == "Gather" and node.input[0] in tables:
                editor.symmetric8_gather(node, recipe.block_size)
        return editor.finish()
    if recipe.method == "symmetric" and part != "decoder":
        model = symmetric4_quantize(model, _weighted_matmuls(model), recipe.block_size,
                                    projection_affine=recipe.projection == "affine", int8=recipe.compute == "int8")
        model = set_accuracy_level(model, recipe.accuracy_level)
    elif recipe.method != "affine":
        raise ValueError(f"quantisation method {recipe.method!r} does not apply to {part}")
    elif part == "decoder":
        return quantize_decoder(model, recipe, vocab_size)
    else:
        model = affine_quantize(model, _weighted_matmuls(model), recipe)
    return weights_to_fp16(model) if recipe.rest == "fp16" else model


PROJECTION_BLOCK = 32


def symmetric4_quantize(model: onnx.ModelProto, nodes: list[onnx.NodeProto], block: int, *,
                        projection_affine: bool = False, int8: bool = False) -> onnx.ModelProto:
    """``nodes`` -> ``symmetric4`` codes (weights whose input size is no multiple of ``block`` stay float32);
    with ``projection_affine`` the vision projection's nodes (scope ``/projection/``) get 4-bit ``affine`` codes
    in blocks of :data:`PROJECTION_BLOCK` instead; with ``int8`` the ``symmetric4`` ones run as int8 matmuls
    (:meth:`GraphEditor.symmetric4_int8_matmul`) instead of ``MatMulNBits``."""
    editor = GraphEditor(model)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in nodes:
        if projection_affine and "/projection/" in node.name:
            if _quantizable(shapes, node, PROJECTION_BLOCK):
                editor.affine_matmul(node, 4, PROJECTION_BLOCK)
        elif _quantizable(shapes, node, block):
            (editor.symmetric4_int8_matmul if int8 else editor.symmetric4_matmul)(node, block)
    return editor.finish()
