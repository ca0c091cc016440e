"""Block-wise weight formats that reproduce GGUF-style grids exactly, on onnxruntime's fast 4-bit kernels.

Why not only ``MatMulNBitsQuantizer``: the real SmolLM2 comes from a GGUF file whose linear weights are
Q4_1 (per block of 32 inputs: ``w = d * q + m``, ``q`` in 0..15, any float ``m``) and whose tied
embedding/output table is Q8_0 (``w = d * q``, ``q`` in -127..127). onnxruntime's round-to-nearest
quantiser uses an integer zero point, which cannot express a float ``m``: re-quantising adds an error
of up to half a step, 20-50x larger than the LoRA fine-tuning's change to the weights (measured: 25% of
captions kept). HQQ's float zero points are exact but run on a slow path (measured 18x slower than
float32 on this CPU). So:

* ``affine`` (4 or 8 bits): ``q = round((w - min) / s)``, ``s = (max - min) / (2^bits - 1)`` per block;
  ``x @ W = MatMulNBits(x, q, s) + blocksum(x) @ (M + 8 S)`` where ``M`` holds the block minima and ``S`` the
  scales (``(K / block, N)``; ``MatMulNBits`` computes ``s (q - 8)`` at its default zero point, which runs 1.6x
  faster than with a zero-point input; the offsets are folded to a constant by onnxruntime at load time); minima
  and 4-bit scales are stored as float16, as GGUF stores them. Exact for Q4_1 weights at 4 bits (and at 8 bits,
  where ``q8 = 17 q4``), ordinary asymmetric quantisation otherwise.
* ``symmetric4``: ``q`` in -8..7 with a float16 scale per block (searched for the least error), run as one
  ``MatMulNBits`` with its default zero point 8: no minima, no offset branch (4.5 bits a weight at blocks of
  32, 4.25 at 64, against 5 for ``affine``). Not exact for any GGUF grid: for the vision encoder.
* ``symmetric8``: ``q = round(w / s)``, ``s = absmax / 127`` per block, exact for Q8_0. 8-bit
  ``MatMulNBits`` has no fast float kernel here, so the 8-bit codes are split into two 4-bit nibbles:
  ``x @ W = MatMulNBits(x, hi, 16 s) + MatMulNBits(x, lo, s) + blocksum(x) @ 8 S`` (both at the default zero
  point 8; ``16 s`` computed in the graph from the stored ``s``); the embedding
  lookup is the same split over two 4-bit ``GatherBlockQuantized`` with the same bytes, so a tied table and
  output head can share one copy of them (:mod:`distilvit.export.shared`).

8-bit ``affine`` uses the same two-nibble split. Shapes: ``K`` inputs, ``N`` outputs, ``kb = K / block``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper as nh

MS = "com.microsoft"


def _blocks(weight: np.ndarray, block: int) -> np.ndarray:
    """``(K, N)`` MatMul weight -> ``(N, kb, block)`` runs along K (``(V, D)`` Gather table: ``(V, kb, block)``)."""
    k, n = weight.shape
    return weight.T.reshape(n, k // block, block)


def half_precision(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16 (how scales and minima are stored), as float32."""
    return values.astype(np.float16).astype(np.float32)


def _nonzero(scale: np.ndarray) -> np.ndarray:
    """A zero scale (a block constant to float16 precision) becomes 1: its codes are then all equal."""
    scale[scale == 0] = 1.0
    return scale


def affine_codes(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., block)`` floats -> codes in ``0 .. 2^bits - 1``, scales ``(...)``, block minima ``(...)``.

    Minima are float16 values; so are 4-bit scales (a Q4_1 scale is a float16 ``d``). 8-bit scales stay
    float32: on a Q4_1 grid they are ``d / 17``, which float16 cannot hold. Codes are computed with the
    stored values."""
    low, high = half_precision(blocks.min(-1)), blocks.max(-1)
    scale = (high - low) / (2**bits - 1)
    scale = _nonzero(half_precision(scale) if bits == 4 else scale.astype(np.float32))
    codes = np.clip(np.rint((blocks - low[..., None]) / scale[..., None]), 0, 2**bits - 1)
    return codes.astype(np.uint8), scale, low


def symmetric8_codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., block)`` floats -> unsigned codes ``q + 128`` (``q`` in -127..127) and float16-valued scales
    ``absmax / 127``."""
    scale = _nonzero(half_precision(np.abs(blocks).max(-1) / 127))
    codes = np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128
    return codes.astype(np.uint8), scale


SCALE_SEARCH = np.linspace(0.7, 1.0, 13)  # symmetric4: candidate scales, as fractions of the full-range scale


def symmetric4_codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., block)`` floats -> unsigned codes ``q + 8`` (``q`` in -8..7) and float16-valued scales (for
    weights on no grid: the vision encoder and projection).

    Per block, the scale with the least squared error among ``f * v / -8`` and ``f * v / 7`` (``v`` the
    block's value of largest magnitude, ``f`` in :data:`SCALE_SEARCH`); scales may be negative, so all 16
    codes are in use whichever sign ``v`` has. Clipping a few outliers for a finer step beats covering the
    full range (measured on SigLIP-base-size weights: ``docs/export.md``)."""
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    best_error = best_scale = None
    for end in (-8.0, 7.0):
        for fraction in SCALE_SEARCH:
            scale = _nonzero(half_precision(extreme * (fraction / end)))
            error = ((np.clip(np.rint(blocks / scale[..., None]), -8, 7) * scale[..., None] - blocks) ** 2).sum(-1)
            if best_error is None:
                best_error, best_scale = error, scale
            else:
                better = error < best_error
                best_error, best_scale = np.where(better, error, best_error), np.where(better, scale, best_scale)
    codes = np.clip(np.rint(blocks / best_scale[..., None]), -8, 7) + 8
    return codes.astype(np.uint8), best_scale.astype(np.float32)


#: Arrays of at most this many elements are stored once per graph whatever their values (:meth:`GraphEditor._const`).
SMALL_CONSTANT = 512


def pack4(codes: np.ndarray) -> np.ndarray:
    """4-bit codes ``(..., 2m)`` -> bytes ``(..., m)``, first code in the low nibble (onnxruntime's layout)."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


class GraphEditor:
    """Replace constant-weight ``MatMul``/``Gather`` nodes of one graph by block-quantised equivalents."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.weights = {t.name: t for t in self.graph.initializer}
        self.new_nodes: dict[str, list[onnx.NodeProto]] = {}  # original node's first output -> replacement
        self.new_inits: list[onnx.TensorProto] = []
        self.block_sums: dict[tuple[str, int, int], str] = {}  # (input, kb, block) -> summed tensor name
        self.used: set[str] = set()
        self.stored: dict[tuple, str] = {}  # key of a constant array (see _const) -> its initializer
        self.int8_matmuls = 0  # symmetric4_int8_matmul calls so far (names their nodes)

    def _const(self, array: np.ndarray, name: str) -> str:
        """A new initializer. Arrays of one repeated value (zero points) and small arrays (shapes, scalars, lookup
        tables) are stored once per graph: an equal one already stored is returned instead."""
        key = None
        if array.size and (array.flat[0] == array).all():
            key = (array.dtype.str, array.shape, array.flat[0].item())
        elif array.size <= SMALL_CONSTANT:
            key = (array.dtype.str, array.shape, array.tobytes())
        if key is None or key not in self.stored:
            self.new_inits.append(nh.from_array(array, name))
            if key is not None:
                self.stored[key] = name
            return name
        return self.stored[key]

    def _scales(self, scale: np.ndarray, name: str, nodes: list) -> str:
        """Block scales: float16 where they are float16 values (stored in half the bytes, cast to float32 in the
        graph; onnxruntime folds the cast into a constant at load time), else float32."""
        if not np.array_equal(half_precision(scale), scale):
            return self._const(scale.astype(np.float32), name)
        half = self._const(scale.astype(np.float16), name + "_fp16")
        nodes.append(helper.make_node("Cast", [half], [name], name=name + "_cast", to=onnx.TensorProto.FLOAT))
        return name

    def _times16(self, scales: str, nodes: list) -> str:
        """``16 * scales`` computed in the graph (exact, and folded to a constant at load time): the high nibble's
        scales of a two-nibble 8-bit weight, without storing a second copy of the scales."""
        factor = self._const(np.array(16.0, dtype=np.float32), "nbits_sixteen")
        nodes.append(helper.make_node("Mul", [scales, factor], [scales + "_x16"], name=scales + "_x16"))
        return scales + "_x16"

    def _nbits(self, x: str, codes: np.ndarray, scale: np.ndarray | str, name: str, out: str, nodes: list) -> None:
        """One 4-bit ``MatMulNBits`` with its default zero point 8 (``x @ ((codes - 8) s)``); ``scale``: an
        array, or the name of a float32 ``(N * kb,)`` tensor already in the graph. No zero-point input: with one,
        onnxruntime's kernel runs about 1.6x slower (``docs/export.md``)."""
        n, kb, block = codes.shape
        if not isinstance(scale, str):
            scale = self._scales(scale.reshape(-1), name + "_scales", nodes)
        nodes.append(helper.make_node("MatMulNBits", [x, self._const(pack4(codes), name + "_q4"), scale], [out],
                                      name=name, domain=MS, K=kb * block, N=n, bits=4, block_size=block))

    def _two_nibbles(self, x: str, codes: np.ndarray, scales: str, name: str, out: str, nodes: list) -> None:
        """8-bit codes ``16 h + l`` as two 4-bit ``MatMulNBits`` added: ``out_codes = 16 s (h - 8) + s (l - 8)``."""
        self._nbits(x, codes >> 4, self._times16(scales, nodes), name + "_hi", out + "_hi", nodes)
        self._nbits(x, codes & 15, scales, name + "_lo", out + "_lo", nodes)
        nodes.append(helper.make_node("Add", [out + "_hi", out + "_lo"], [out + "_codes"], name=name + "_add"))

    def _offsets(self, scales: str, shape: tuple[int, int], shift: float, minima: np.ndarray | None, name: str,
                 nodes: list) -> str:
        """``(kb, N)`` float32 block offsets ``shift * s (+ minima)`` from the ``(N * kb,)`` scales already in the
        graph and the float16 ``minima (kb, N)``: constant-only nodes that onnxruntime folds at load time."""
        n, kb = shape
        grid = self._const(np.array([n, kb], dtype=np.int64), name + "_grid")
        factor = self._const(np.array(shift, dtype=np.float32), f"nbits_shift{shift:g}")
        nodes += [helper.make_node("Reshape", [scales, grid], [name + "_s_nk"], name=name + "_s_nk"),
                  helper.make_node("Transpose", [name + "_s_nk"], [name + "_s_kn"], name=name + "_s_kn", perm=[1, 0]),
                  helper.make_node("Mul", [name + "_s_kn", factor], [name + "_shift"], name=name + "_shift")]
        if minima is None:
            return name + "_shift"
        stored = self._const(minima.astype(np.float16), name + "_minima_fp16")
        nodes += [helper.make_node("Cast", [stored], [name + "_minima"], name=name + "_cast", to=onnx.TensorProto.FLOAT),
                  helper.make_node("Add", [name + "_minima", name + "_shift"], [name + "_offsets"], name=name + "_offsets")]
        return name + "_offsets"

    def _offset_branch(self, x: str, offsets: str, kb: int, block: int, partial: str, out: str, name: str,
                       nodes: list) -> None:
        """``out = partial + blocksum(x) @ offsets``."""
        summed = self._block_sum(x, kb, block, nodes)
        nodes += [helper.make_node("MatMul", [summed, offsets], [out + "_offset"], name=name + "_offset"),
                  helper.make_node("Add", [partial, out + "_offset"], [out], name=name + "_sum")]

    def _block_sum(self, x: str, kb: int, block: int, nodes: list) -> str:
        """``(B, T, K)`` -> ``(B, T, kb)`` sums of ``x`` over each block (computed once per input tensor)."""
        key = (x, kb, block)
        if key not in self.block_sums:
            name = f"{x}_blocksum{block}"
            shape = self._const(np.array([0, 0, kb, block], dtype=np.int64), name + "_shape")
            axes = self._const(np.array([-1], dtype=np.int64), name + "_axes")
            nodes += [helper.make_node("Reshape", [x, shape], [name + "_blocks"], name=name + "_reshape"),
                      helper.make_node("ReduceSum", [name + "_blocks", axes], [name], name=name, keepdims=0)]
            self.block_sums[key] = name
        return self.block_sums[key]

    def affine_matmul(self, node: onnx.NodeProto, bits: int, block: int) -> None:
        """``x @ W`` -> 4-bit (or two-nibble 8-bit) codes at the default zero point + block offsets branch (inputs
        of rank 3). ``w = s q + m`` with ``q = 16 h + l`` at 8 bits; the kernels compute ``s (q - 8)`` (4 bits) or
        ``16 s (h - 8) + s (l - 8) = s (q - 136)`` (8 bits), so the offsets are ``m + 8 s`` or ``m + 136 s``."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale, low = affine_codes(_blocks(weight, block), bits)
        x, out, name, nodes = node.input[0], node.output[0], node.name or node.output[0], []
        n, kb, _ = codes.shape
        scales = self._scales(scale.reshape(-1), name + "_scales", nodes)
        if bits == 4:
            self._nbits(x, codes, scales, name + "_nbits", out + "_codes", nodes)
        else:
            self._two_nibbles(x, codes, scales, name, out, nodes)
        offsets = self._offsets(scales, (n, kb), 8 if bits == 4 else 136, low.T, name, nodes)
        self._offset_branch(x, offsets, kb, block, out + "_codes", out, name, nodes)
        self._replace(node, nodes)

    def symmetric4_matmul(self, node: onnx.NodeProto, block: int) -> None:
        """``x @ W`` -> one 4-bit ``MatMulNBits`` with its default zero point 8 (no minima branch)."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale = symmetric4_codes(_blocks(weight, block))
        nodes = []
        self._nbits(node.input[0], codes, scale, (node.name or node.output[0]) + "_nbits", node.output[0], nodes)
        self._replace(node, nodes)

    def symmetric4_int8_matmul(self, node: onnx.NodeProto, block: int) -> None:
        """``x @ W`` -> ``symmetric4`` codes and scales in the file, run as an int8 matmul.

        Stored: the codes ``q + 8`` as bytes ``(K, N / 2)`` (low nibble: column ``2j``, high nibble: column
        ``2j + 1``) and the float16 block scales ``s`` as ``(kb, 1, N)``. The graph turns them into int8 weights
        ``round((q - 8) s / c)`` with one scale per output column ``c = 8 max_blocks |s| / 63`` (7 bits: the
        u8 x s8 kernels of AVX2 CPUs sum pairs of products in int16, which 8-bit weights can overflow) using
        constant-only ops (a ``Gather`` of both nibbles from a 256-entry table, ``Mul``, ``Round``, ``Cast``), which
        onnxruntime folds into constants when it creates the session. At run time ``x`` is quantised to 8 bits
        per tensor: ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x_scale c)``, the pattern onnxruntime
        fuses into its int8 matmul (``DynamicQuantizeMatMul``). The int8 weights are the 4-bit ones to about 1%
        of their size (a step of ``c`` against the 4-bit step ``s``); the activations' rounding adds about as much."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale = symmetric4_codes(_blocks(weight, block))  # (N, kb, block), (N, kb)
        n, kb, _ = codes.shape
        k = kb * block
        columns = codes.reshape(n, k).T  # (K, N)
        if n % 2:
            columns = np.concatenate([columns, np.full((k, 1), 8, dtype=np.uint8)], axis=1)
        packed_codes = pack4(columns)  # (K, ceil(N / 2))
        self.int8_matmuls += 1
        x, out, nodes = node.input[0], node.output[0], []
        name = f"q4i8_{self.int8_matmuls}"

        def op(kind, inputs, suffix, **attrs):
            nodes.append(helper.make_node(kind, inputs, [f"{name}_{suffix}"], name=f"{name}_{suffix}", **attrs))
            return f"{name}_{suffix}"

        def const(value, dtype=np.float32):  # small constants: _const stores each value once per graph
            return self._const(np.array(value, dtype=dtype), f"nbits_const{len(self.new_inits)}")

        f32 = onnx.TensorProto.FLOAT
        table = self._const(  # byte -> (low - 8, high - 8)
            np.stack([np.arange(256) % 16, np.arange(256) // 16], -1).astype(np.float32) - 8, "nbits_nibble_table")
        index = op("Cast", [self._const(packed_codes, name + "_q4")], "index", to=onnx.TensorProto.INT32)
        centred = op("Gather", [table, index], "centred")  # (K, N' / 2, 2)
        if n % 2:
            centred = op("Slice", [op("Reshape", [centred, const([k, -1], np.int64)], "rows"), const([0], np.int64),
                                   const([n], np.int64), const([1], np.int64)], "cut")
        blocks = op("Reshape", [centred, const([kb, block, n], np.int64)], "blocks")
        block_scales = self._scales(scale.T.reshape(-1), name + "_scales", nodes)  # (kb * N,)
        block_scales = op("Reshape", [block_scales, const([kb, 1, n], np.int64)], "bscales")
        column = op("Div", [op("ReduceMax", [op("Abs", [block_scales], "abs")], "smax", axes=[0], keepdims=0),
                            const(63.0 / 8)], "colscale_raw")
        column = op("Max", [column, const(1e-30)], "colscale")  # (1, N)
        ratio = op("Div", [block_scales, column], "ratio")  # (kb, 1, N), |ratio| <= 63 / 8
        weight_i8 = op("Cast", [op("Round", [op("Mul", [blocks, ratio], "scaled")], "round")], "int8",
                       to=onnx.TensorProto.INT8)
        weight_i8 = op("Reshape", [weight_i8, const([k, n], np.int64)], "weight")  # (K, N), |w| <= 63
        quantised = [f"{name}_xq", f"{name}_xs", f"{name}_xz"]
        nodes.append(helper.make_node("DynamicQuantizeLinear", [x], quantised, name=f"{name}_dql"))
        product = op("MatMulInteger", [quantised[0], weight_i8, quantised[2]], "mmi")
        scales = op("Mul", [quantised[1], column], "scale")
        nodes.append(helper.make_node("Mul", [op("Cast", [product], "float", to=f32), scales], [out], name=f"{name}_out"))
        self._replace(node, nodes)

    def symmetric8_matmul(self, node: onnx.NodeProto, block: int) -> None:
        """``x @ W`` -> two 4-bit ``MatMulNBits`` over the high and low nibbles of 8-bit symmetric codes, both at
        the default zero point: ``16 s (h - 8) + s (l - 8) = s (q - 8)`` for codes ``q + 128 = 16 h + l``, plus a
        block-sum branch adding the ``8 s`` back."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale = symmetric8_codes(_blocks(weight, block))
        x, out, name, nodes = node.input[0], node.output[0], node.name or node.output[0], []
        n, kb, _ = codes.shape
        scales = self._scales(scale.reshape(-1), name + "_scales", nodes)
        self._two_nibbles(x, codes, scales, name, out, nodes)
        offsets = self._offsets(scales, (n, kb), 8, None, name, nodes)
        self._offset_branch(x, offsets, kb, block, out + "_codes", out, name, nodes)
        self._replace(node, nodes)

    def symmetric8_gather(self, node: onnx.NodeProto, block: int) -> None:
        """Embedding lookup ``Gather(table (V, D), ids)`` -> two 4-bit ``GatherBlockQuantized`` over the high and
        low nibbles of 8-bit symmetric codes, added in float32 (exactly ``(q - 128) s``).

        The nibble codes, scales and zero points are byte for byte those that :meth:`symmetric8_matmul` writes
        for the transposed table (a tied output head), so a bundle can store them once for both graphs
        (:mod:`distilvit.export.shared`). ``GatherBlockQuantized`` with ``bits=4`` reads uint8 data of shape
        ``(V, D / 2)``, first code in the low nibble, scales ``(V, kb)`` and packed zero points
        ``(V, ceil(kb / 2))``, default zero point 8 (checked in ``tests/test_nbits.py``)."""
        table = nh.to_array(self.weights[node.input[0]])
        vocab, width = table.shape
        codes, scale = symmetric8_codes(table.reshape(vocab, width // block, block))
        name, out, nodes = node.name or node.output[0], node.output[0], []
        kb = width // block
        scales = self._scales(scale, name + "_scales", nodes)
        for half, part, part_scales, zero in (("hi", codes >> 4, self._times16(scales, nodes), None),
                                              ("lo", codes & 15, scales, 0)):
            inputs = [self._const(pack4(part).reshape(vocab, width // 2), f"{name}_{half}_q4"), node.input[1],
                      part_scales]
            if zero is not None:
                inputs.append(self._const(np.full((vocab, (kb + 1) // 2), zero | (zero << 4), dtype=np.uint8),
                                          f"{name}_{half}_zeros"))
            nodes.append(helper.make_node("GatherBlockQuantized", inputs, [f"{out}_{half}"], name=f"{name}_{half}",
                                          domain=MS, bits=4, block_size=block, gather_axis=0, quantize_axis=1))
        nodes.append(helper.make_node("Add", [f"{out}_hi", f"{out}_lo"], [out], name=name + "_add"))
        self._replace(node, nodes)

    def _replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        self.new_nodes[node.output[0]] = nodes
        self.used.add(node.input[1] if node.op_type == "MatMul" else node.input[0])

    def finish(self) -> onnx.ModelProto:
        """Apply the replacements, drop the replaced float weights, add the com.microsoft opset."""
        nodes = []
        for node in self.graph.node:
            nodes += self.new_nodes.get(node.output[0], [node])
        still_used = {i for n in nodes for i in n.input}
        kept = [t for t in self.graph.initializer if t.name not in self.used or t.name in still_used]
        self.graph.ClearField("node")
        self.graph.node.extend(nodes)
        self.graph.ClearField("initializer")
        self.graph.initializer.extend(kept + self.new_inits)
        if not any(op.domain == MS for op in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS, 1))
        return self.model
