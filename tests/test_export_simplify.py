"""``distilvit.export.simplify.simplify_shapes`` on a tiny LM's decoder graph: far fewer nodes, the same outputs bit
for bit, also at sizes it never probed."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from distilvit.export import graphs
from distilvit.export.simplify import decoder_probes, simplify_shapes
from distilvit.model import CaptionerSpec, build_captioner


@pytest.fixture(scope="module")
def decoder(tmp_path_factory, tiny_encoder, tiny_lm):
    torch.manual_seed(0)
    model, _ = build_captioner(CaptionerSpec(encoder=str(tiny_encoder), decoder=str(tiny_lm)))
    if model.has_lora():
        model.merge_lora()
    dims = graphs.decoder_dims(model.language_model)
    path = tmp_path_factory.mktemp("decoder") / "decoder.onnx"
    graphs.export_decoder(model.language_model, path, dims)
    return onnx.load(str(path)), dims


def _outputs(model: onnx.ModelProto, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def test_simplify_shapes_folds_the_shape_arithmetic(decoder):
    raw, dims = decoder
    simple = simplify_shapes(copy.deepcopy(raw), decoder_probes(dims))
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)
    assert len(simple.graph.node) < 0.7 * len(raw.graph.node)
    assert count(simple, "Shape") <= 4 < count(raw, "Shape")  # one per dynamic size, not one per layer
    assert [i.name for i in simple.graph.input] == [i.name for i in raw.graph.input]
    assert [o.name for o in simple.graph.output] == [o.name for o in raw.graph.output]
    # sizes none of the probes used, prefill (empty past) and decode steps
    unseen = decoder_probes(dims, sizes=((3, 6, 0), (2, 1, 9), (1, 5, 3), (5, 1, 1)))
    for before, after in zip(_outputs(raw, unseen), _outputs(simple, unseen)):
        for a, b in zip(before, after):
            assert a.shape == b.shape and np.array_equal(a, b)
