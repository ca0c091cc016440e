"""Fewer nodes per run: fold the shape arithmetic of an exported graph's dynamic axes (``simplify_shapes``).

The TorchScript exporter writes every ``view``/``reshape``/``expand`` of a dynamic tensor as a chain
``Shape -> Gather -> Unsqueeze -> Concat`` (the 30-layer LM: about 1800 such nodes, each run on every decode
step, where a step's real work is some 200 matmuls). Most of these values are constants (head counts, head
width), the rest repeat the same few dynamic sizes (batch, new positions, past and total length) layer after
layer. ``simplify_shapes`` finds them by running the graph at a few probe sizes:

* every tensor computed from shapes and constants alone (no tensor data) whose value is the same at every
  probe becomes a constant;
* one that equals, at every probe, a tensor computed earlier is replaced by it (one ``Shape -> Gather`` for
  the batch size instead of one per layer);
* a ``Reshape`` target that is left dynamic becomes a constant with ``0`` (copy the input's size) and ``-1``
  (infer one size) where the probes show that this gives the same shape.

Only shape computations change, not one float operation: the outputs stay bit-identical (checked at the
probes by :func:`simplify_shapes` itself, and in ``tests/test_export_simplify.py``). The probes must vary
every dynamic size independently and cover its edge values (an empty past), so that a value constant or
equal at all probes is so in general: shape arithmetic is low-degree polynomial in the sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper as nh

SMALL = 64  # at most this many elements: a shape-sized tensor (larger constants are weights)
Probe = dict[str, np.ndarray]


def decoder_probes(dims: dict, sizes: Sequence[tuple[int, int, int]] = ((2, 1, 5), (3, 1, 0), (1, 4, 2), (1, 1, 7),
                                                                        (4, 2, 0))) -> list[Probe]:
    """Feeds of ``decoder.onnx`` at ``(batch, new, past)`` sizes that vary each independently (with empty pasts)."""
    rng = np.random.default_rng(0)
    probes = []
    for batch, new, past in sizes:
        feed = {"inputs_embeds": rng.standard_normal((batch, new, dims["hidden_size"])).astype(np.float32),
                "attention_mask": np.ones((batch, past + new), dtype=np.int64),
                "position_ids": np.broadcast_to(np.arange(past, past + new, dtype=np.int64), (batch, new)).copy()}
        for i in range(dims["num_layers"]):
            for kind in ("key", "value"):
                feed[f"past_key_values.{i}.{kind}"] = rng.standard_normal(
                    (batch, dims["num_kv_heads"], past, dims["head_dim"])).astype(np.float32)
        probes.append(feed)
    return probes


def _shape_only(model: onnx.ModelProto) -> list[str]:
    """Node outputs computed from ``Shape`` nodes and small constants alone, in graph order."""
    graph = model.graph
    known = {t.name for t in graph.initializer if int(np.prod(t.dims)) <= SMALL}
    known.add("")  # absent optional inputs
    found = []
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            continue
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None and int(np.prod(value.t.dims)) <= SMALL:
                known.update(node.output)
            continue
        if node.op_type in ("Shape", "Size") or (node.domain in ("", "ai.onnx") and all(i in known for i in node.input)
                                                and node.input):
            known.update(node.output)
            found += list(node.output)
    return found


def _run(model: onnx.ModelProto, probes: list[Probe], names: list[str]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [dict(zip(names, session.run(names, feed))) for feed in probes]


def _key(values: list[np.ndarray]) -> tuple:
    return tuple((v.dtype.str, v.shape, v.tobytes()) for v in values)


def simplify_shapes(model: onnx.ModelProto, probes: list[Probe], check: bool = True) -> onnx.ModelProto:
    """``model`` with its shape arithmetic folded (module docstring); ``probes``: feeds at sizes that vary every
    dynamic axis. With ``check``, the new graph's outputs are compared with the old one's at the probes (equal
    bit for bit, else ``AssertionError``)."""
    graph = model.graph
    outputs = [o.name for o in graph.output]
    candidates = _shape_only(model)
    shape_only = set(candidates)
    reshapes = [n for n in graph.node if n.op_type == "Reshape" and n.input[1] in shape_only]

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    extra = []
    for k, node in enumerate(reshapes):  # the shapes of the dynamic reshapes' data inputs
        extra.append(f"simplify_probe_shape_{k}")
        probe.graph.node.append(helper.make_node("Shape", [node.input[0]], [extra[-1]]))
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in candidates + extra + outputs)
    seen = _run(probe, probes, candidates + extra + outputs)
    del probe

    replace: dict[str, str] = {}
    constants: list[onnx.TensorProto] = []
    by_value: dict[tuple, str] = {}
    const_names: dict[tuple, str] = {}

    def constant(value: np.ndarray) -> str:
        key = _key([value])
        if key not in const_names:
            const_names[key] = f"shape_const_{len(const_names)}"
            constants.append(nh.from_array(value, const_names[key]))
        return const_names[key]

    for name in candidates:
        values = [s[name] for s in seen]
        key = _key(values)
        if values[0].size <= 4096 and len({_key([v]) for v in values}) == 1:
            replace[name] = constant(values[0])
        elif key in by_value:
            replace[name] = by_value[key]
        else:
            by_value[key] = name
    for k, node in enumerate(reshapes):
        if node.input[1] in replace and replace[node.input[1]].startswith("shape_const_"):
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        targets = [s[node.input[1]] for s in seen]
        shapes = [s[extra[k]] for s in seen]
        if allowzero or len({len(t) for t in targets}) != 1:
            continue
        target = []
        for i in range(len(targets[0])):
            column = [int(t[i]) for t in targets]
            if all(i < len(s) and int(s[i]) == c for s, c in zip(shapes, column)):
                target.append(0)
            elif len(set(column)) == 1 and column[0] >= 0:
                target.append(column[0])
            else:
                target.append(-1)
        if target.count(-1) > 1:
            continue
        node.input[1] = constant(np.array(target, dtype=np.int64))

    keep_out = set(outputs)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replace and name not in keep_out:
                node.input[i] = replace[name]
    graph.initializer.extend(constants)
    _drop_dead(model)
    if check:
        after = _run(model, probes, outputs)
        for before_run, after_run in zip(seen, after):
            for name in outputs:
                if not np.array_equal(before_run[name], after_run[name]):  # not an assert: kept under python -O
                    raise AssertionError(f"simplify_shapes changed {name}")
    return model


def _drop_dead(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is used (repeatedly), and initializers no node reads."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    graph.ClearField("node")
    graph.node.extend(kept)
    used = [t for t in graph.initializer if t.name in needed]
    graph.ClearField("initializer")
    graph.initializer.extend(used)

