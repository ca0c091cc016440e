"""Block-wise weight formats that reproduce GGUF-style grids exactly, on onnxruntime's fast 4-bit kernels.

Why not only ``MatMulNBitsQuantizer``: the real SmolLM2 comes from a GGUF file whose linear weights are
Q4_1 (per block of 32 inputs: ``w = d * q + m``, ``q`` in 0..15, any float ``m``) and whose tied
embedding/output table is Q8_0 (``w = d * q``, ``q`` in -127..127). onnxruntime's round-to-nearest
quantiser uses an integer zero point, which cannot express a float ``m``: re-quantising adds an error
of up to half a step, 20-50x larger than the LoRA fine-tuning's change to the weights (measured: 25% of
captions kept). HQQ's float zero points are exact but run on a slow path (measured 18x slower than
float32 on this CPU). So:

* ``affine`` (4 or 8 bits): ``q = round((w - min) / s)``, ``s = (max - min) / (2^bits - 1)`` per block;
  ``x @ W = MatMulNBits(x, q, s, zero point 0) + blocksum(x) @ M`` where ``M`` holds the block minima
  (``(K / block, N)``, stored as float16: GGUF stores them as float16 too). Exact for Q4_1 weights at
  4 bits (and at 8 bits, where ``q8 = 17 q4``), ordinary asymmetric quantisation otherwise.
* ``symmetric8``: ``q = round(w / s)``, ``s = absmax / 127`` per block, exact for Q8_0. 8-bit
  ``MatMulNBits`` has no fast float kernel here, so the 8-bit codes are split into two 4-bit nibbles:
  ``x @ W = MatMulNBits(x, hi, 16 s, zero point 8) + MatMulNBits(x, lo, s, zero point 0)``; the embedding
  lookup uses ``GatherBlockQuantized`` with 8-bit data.

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


def affine_codes(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., block)`` floats -> codes in ``0 .. 2^bits - 1``, scales ``(...)``, block minima ``(...)``."""
    low, high = blocks.min(-1), blocks.max(-1)
    scale = (high - low) / (2**bits - 1)
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint((blocks - low[..., None]) / scale[..., None]), 0, 2**bits - 1)
    return codes.astype(np.uint8), scale.astype(np.float32), low.astype(np.float32)


def symmetric8_codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., block)`` floats -> unsigned codes ``q + 128`` (``q`` in -127..127) and scales ``absmax / 127``."""
    scale = np.abs(blocks).max(-1) / 127
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128
    return codes.astype(np.uint8), scale.astype(np.float32)


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

    def _const(self, array: np.ndarray, name: str) -> str:
        self.new_inits.append(nh.from_array(array, name))
        return name

    def _nbits(self, x: str, codes: np.ndarray, scale: np.ndarray, zero: int | None, name: str, out: str,
               nodes: list) -> None:
        """One 4-bit ``MatMulNBits``; ``zero=None`` keeps the default zero point 8."""
        n, kb, block = codes.shape
        inputs = [x, self._const(pack4(codes), name + "_q4"), self._const(scale.reshape(-1), name + "_scales")]
        if zero is not None:
            zeros = np.full((n, (kb + 1) // 2), zero | (zero << 4), dtype=np.uint8)
            inputs.append(self._const(zeros, name + "_zeros"))
        nodes.append(helper.make_node("MatMulNBits", inputs, [out], name=name, domain=MS, K=kb * block, N=n, bits=4,
                                      block_size=block))

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
        """``x @ W`` -> 4-bit (or two-nibble 8-bit) codes + block minima branch (inputs of rank 3)."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale, low = affine_codes(_blocks(weight, block), bits)
        x, out, name, nodes = node.input[0], node.output[0], node.name or node.output[0], []
        if bits == 4:
            self._nbits(x, codes, scale, 0, name + "_nbits", out + "_codes", nodes)
        else:
            self._nbits(x, codes >> 4, 16 * scale, 0, name + "_hi", out + "_hi", nodes)
            self._nbits(x, codes & 15, scale, 0, name + "_lo", out + "_lo", nodes)
            nodes.append(helper.make_node("Add", [out + "_hi", out + "_lo"], [out + "_codes"], name=name + "_add"))
        summed = self._block_sum(x, codes.shape[1], block, nodes)
        minima = self._const(low.T.astype(np.float16), name + "_minima_fp16")
        nodes += [helper.make_node("Cast", [minima], [name + "_minima"], name=name + "_cast", to=onnx.TensorProto.FLOAT),
                  helper.make_node("MatMul", [summed, name + "_minima"], [out + "_offset"], name=name + "_offset"),
                  helper.make_node("Add", [out + "_codes", out + "_offset"], [out], name=name + "_sum")]
        self._replace(node, nodes)

    def symmetric8_matmul(self, node: onnx.NodeProto, block: int) -> None:
        """``x @ W`` -> two 4-bit ``MatMulNBits`` over the high and low nibbles of 8-bit symmetric codes."""
        weight = nh.to_array(self.weights[node.input[1]])
        codes, scale = symmetric8_codes(_blocks(weight, block))
        x, out, name, nodes = node.input[0], node.output[0], node.name or node.output[0], []
        self._nbits(x, codes >> 4, 16 * scale, None, name + "_hi", out + "_hi", nodes)  # (hi - 8) * 16 s
        self._nbits(x, codes & 15, scale, 0, name + "_lo", out + "_lo", nodes)
        nodes.append(helper.make_node("Add", [out + "_hi", out + "_lo"], [out], name=name + "_add"))
        self._replace(node, nodes)

    def symmetric8_gather(self, node: onnx.NodeProto, block: int) -> None:
        """Embedding lookup ``Gather(table (V, D), ids)`` -> ``GatherBlockQuantized`` with 8-bit codes."""
        table = nh.to_array(self.weights[node.input[0]])
        codes, scale = symmetric8_codes(table.reshape(table.shape[0], -1, block))
        name = node.name or node.output[0]
        inputs = [self._const(codes.reshape(table.shape), name + "_q8"), node.input[1],
                  self._const(scale, name + "_scales"),
                  self._const(np.full(scale.shape, 128, dtype=np.uint8), name + "_zeros")]
        self._replace(node, [helper.make_node("GatherBlockQuantized", inputs, list(node.output), name=name, domain=MS,
                                              bits=8, block_size=block, gather_axis=0, quantize_axis=1)])

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
