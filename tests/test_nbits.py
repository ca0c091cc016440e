"""The block formats of ``distilvit.export.nbits`` on single-matmul graphs: weights on a GGUF grid (Q4_1,
Q8_0) are reproduced exactly, scales and minima are stored as float16, and any other weights round to
within half a quantisation step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from distilvit.export.nbits import GraphEditor, symmetric8_codes

K, N, BLOCK = 64, 24, 32


def matmul_graph(weight: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, N])],
                              [nh.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def quantised(weight: np.ndarray, kind: str) -> onnx.ModelProto:
    model = matmul_graph(weight)
    editor = GraphEditor(model)
    node = model.graph.node[0]
    if kind == "affine4":
        editor.affine_matmul(node, 4, BLOCK)
    elif kind == "affine8":
        editor.affine_matmul(node, 8, BLOCK)
    else:
        editor.symmetric8_matmul(node, BLOCK)
    return editor.finish()


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def q4_1_weight(rng) -> np.ndarray:
    """``w = d q + m`` per block of 32 inputs, ``d``/``m`` float16, codes spanning 0..15 (as GGUF's quantiser)."""
    d = rng.uniform(0.001, 0.02, size=(K // BLOCK, 1, N)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.1, 0.0, size=(K // BLOCK, 1, N)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, size=(K // BLOCK, BLOCK, N))
    q[:, 0], q[:, 1] = 0, 15
    return (d * q + m).reshape(K, N).astype(np.float32)


def q8_0_weight(rng) -> np.ndarray:
    d = rng.uniform(0.001, 0.02, size=(K // BLOCK, 1, N)).astype(np.float16).astype(np.float32)
    q = rng.integers(-127, 128, size=(K // BLOCK, BLOCK, N))
    q[:, 0] = 127
    return (d * q).reshape(K, N).astype(np.float32)


@pytest.mark.parametrize("kind, make", [("affine4", q4_1_weight), ("affine8", q4_1_weight),
                                        ("symmetric8", q8_0_weight)])
def test_gguf_grids_are_reproduced_exactly(kind, make):
    rng = np.random.default_rng(0)
    weight = make(rng)
    x = rng.standard_normal((2, 3, K)).astype(np.float32)
    expected = x.astype(np.float64) @ weight.astype(np.float64)
    got = run(quantised(weight, kind), x)
    # exact weights: only float32 summation-order error remains
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("kind", ["affine4", "affine8", "symmetric8"])
def test_scales_and_minima_are_stored_as_float16(kind):
    """Half the bytes of float32 scales; 8-bit affine scales stay float32 (on a Q4_1 grid they are d/17)."""
    weight = np.random.default_rng(1).standard_normal((K, N)).astype(np.float32)
    model = quantised(weight, kind)
    dtypes = {t.name: t.data_type for t in model.graph.initializer}
    assert "w" not in dtypes  # the float weight is gone
    scales = [name for name in dtypes if "_scales" in name]
    minima = [name for name in dtypes if "_minima" in name]
    assert scales and (minima or kind == "symmetric8")
    assert all(dtypes[name] == TensorProto.FLOAT16 for name in minima)
    wanted = TensorProto.FLOAT if kind == "affine8" else TensorProto.FLOAT16
    assert all(dtypes[name] == wanted for name in scales), {name: dtypes[name] for name in scales}


@pytest.mark.parametrize("kind, bits", [("affine4", 4), ("affine8", 8)])
def test_off_grid_weights_round_to_within_half_a_step(kind, bits):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((K, N)).astype(np.float32)
    blocks = weight.reshape(K // BLOCK, BLOCK, N)
    step = np.repeat((blocks.max(1) - blocks.min(1)) / (2**bits - 1), BLOCK, axis=0)  # (K, N)
    dequantised = run(quantised(weight, kind), np.eye(K, dtype=np.float32)[None])[0]  # one-hot rows read W back
    assert np.all(np.abs(dequantised - weight) <= 0.5 * step * 1.01 + 1e-6)
    assert np.abs(dequantised - weight).max() > 0  # off the grid: it did round


def gather_graph(table: np.ndarray, split: bool) -> onnx.ModelProto:
    """``Gather(table, ids)`` quantised as the bundles store it (``split``: two 4-bit nibble lookups) or as a
    single 8-bit ``GatherBlockQuantized`` over the same codes (the reference)."""
    node = helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, table.shape[1]])],
                              [nh.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if split:
        editor = GraphEditor(model)
        editor.symmetric8_gather(model.graph.node[0], BLOCK)
        return editor.finish()
    codes, scale = symmetric8_codes(table.reshape(table.shape[0], -1, BLOCK))
    eight = helper.make_node("GatherBlockQuantized", ["q8", "ids", "s", "z"], ["y"], domain="com.microsoft", bits=8,
                             block_size=BLOCK, gather_axis=0, quantize_axis=1)
    graph = helper.make_graph([eight], "g", list(graph.input), list(graph.output), [
        nh.from_array(codes.reshape(table.shape), "q8"), nh.from_array(scale, "s"),
        nh.from_array(np.full(scale.shape, 128, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    return model


def lookup(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids})[0]


@pytest.mark.parametrize("width", [64, 96])  # an even and an odd number of blocks per row
def test_nibble_lookup_equals_the_8bit_lookup_exactly(width):
    rng = np.random.default_rng(3)
    table = (rng.standard_normal((50, width)) * rng.uniform(0.001, 1, (50, 1))).astype(np.float32)
    ids = np.arange(50, dtype=np.int64)
    got = lookup(gather_graph(table, split=True), ids)
    np.testing.assert_array_equal(got, lookup(gather_graph(table, split=False), ids))  # bit for bit
    q8 = q8_0_weight(rng)[:, :N].T.copy()  # (N, K): rows of a Q8_0 table
    np.testing.assert_array_equal(lookup(gather_graph(q8, split=True), np.arange(N, dtype=np.int64)), q8)


def test_lookup_and_tied_head_hold_the_same_bytes():
    """What lets a bundle store the table once (shared.py): the nibble lookup of a table holds, byte for byte,
    the codes and scales of the two-nibble output head over its transpose (the head runs both nibbles at the
    default zero point; only the lookup's low nibble has a zero-point array, of zeros)."""
    table = np.random.default_rng(4).standard_normal((N, K)).astype(np.float32)
    gather = {t.name: t.raw_data for t in gather_graph(table, split=True).graph.initializer if len(t.raw_data) >= 16}
    head = {t.raw_data for t in quantised(table.T.copy(), "symmetric8").graph.initializer}
    shared = {name for name, data in gather.items() if data in head}
    assert len(gather) == 4 and len(shared) == 3  # high and low nibbles, scales
    (zeros,) = set(gather) - shared
    assert "zeros" in zeros and not any(gather[zeros])


def test_symmetric4_reproduces_its_grid_and_rounds_other_weights_within_a_step():
    rng = np.random.default_rng(5)
    d = rng.uniform(0.001, 0.02, size=(K // BLOCK, 1, N)).astype(np.float16).astype(np.float32)
    q = rng.integers(-8, 8, size=(K // BLOCK, BLOCK, N))
    q[:, 0] = -8
    on_grid = (d * q).reshape(K, N)
    eye = np.eye(K, dtype=np.float32)[None]
    for weight, exact in ((on_grid, True), (rng.standard_normal((K, N)).astype(np.float32), False)):
        model = matmul_graph(weight)
        editor = GraphEditor(model)
        editor.symmetric4_matmul(model.graph.node[0], BLOCK)
        model = editor.finish()
        assert {n.op_type for n in model.graph.node} == {"MatMulNBits", "Cast"}  # no minima branch, no zero points
        assert len(model.graph.node[-1].input) == 3
        dequantised = run(model, eye)[0]
        if exact:
            np.testing.assert_array_equal(dequantised, weight)
        else:
            step = np.repeat(np.abs(weight.reshape(K // BLOCK, BLOCK, N)).max(1) / 7, BLOCK, axis=0)
            assert np.all(np.abs(dequantised - weight) <= step)


def test_symmetric4_int8_weights_fold_at_load_and_stay_close():
    """The int8 vision path: the file holds the 4-bit codes and float16 scales (no int8 or float32 weight), the
    unpacking is folded by onnxruntime when the session is created (the optimised graph holds none of its ops and
    one int8 matmul), and the result is the 4-bit matmul up to the activations' 8-bit rounding."""
    rng = np.random.default_rng(6)
    k = 128
    weight = (rng.standard_normal((k, N)) * 0.05).astype(np.float32)
    model = matmul_graph(weight)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = k
    reference_model = onnx.ModelProto.FromString(model.SerializeToString())
    editor = GraphEditor(model)
    editor.symmetric4_int8_matmul(model.graph.node[0], 64)
    model = editor.finish()
    stored = {t.data_type for t in model.graph.initializer if int(np.prod(t.dims)) >= N
              and t.name != "nbits_nibble_table"}  # (256, 2) floats: byte -> its two codes
    assert stored == {TensorProto.UINT8, TensorProto.FLOAT16}  # codes (k x N / 2 bytes) and block scales
    assert sum(t.dims[0] * t.dims[1] for t in model.graph.initializer if t.data_type == TensorProto.UINT8) == k * N // 2
    editor = GraphEditor(reference_model)
    editor.symmetric4_matmul(reference_model.graph.node[0], 64)
    reference_model = editor.finish()

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(Path(tempfile.mkdtemp()) / "optimised.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert not ops & {"Gather", "Round", "Reshape", "ReduceMax", "Abs"}, ops  # the weight's unpacking was folded
    assert ops & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger"}, ops
    x = rng.standard_normal((2, 5, k)).astype(np.float32)
    got, want = session.run(None, {"x": x})[0], run(reference_model, x)
    error = np.sqrt(((got - want) ** 2).mean() / (want**2).mean())
    assert error < 0.02, error  # 8-bit activations (and the 4-bit weights requantised to int8 per column)


def test_int8_matmuls_share_their_constants():
    """Two int8 matmuls in one graph: every initializer name is unique (onnxruntime-web logs duplicates as
    errors), the small constants are stored once, and both outputs stay close to the 4-bit matmuls'."""
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal((K, N)).astype(np.float32) for _ in range(2)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"mm{i}") for i in range(2)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, K])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [None, None, N]) for i in range(2)],
                              [nh.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    editor = GraphEditor(model)
    for node in list(model.graph.node):
        editor.symmetric4_int8_matmul(node, 64)
    model = editor.finish()
    names = [t.name for t in model.graph.initializer]
    assert len(names) == len(set(names)) and names.count("nbits_nibble_table") == 1
    x = rng.standard_normal((1, 6, K)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, weight in zip(session.run(None, {"x": x}), weights):
        want = x @ weight
        assert np.sqrt(((got - want) ** 2).mean() / (want**2).mean()) < 0.15  # 4-bit weights + 8-bit activations
