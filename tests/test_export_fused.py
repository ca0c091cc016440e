"""Fused contrib ops in exported graphs: one ``GroupQueryAttention`` node per decoder layer (rotary embedding
inside) and one ``FastGelu``/``QuickGelu`` node per encoder activation, each computing what PyTorch and the
unfused export compute. Tiny random models; a few seconds."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_models import make_encoder
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from distilvit.export import attention, graphs
from distilvit.export.simplify import decoder_probes
from distilvit.model import CaptionerSpec, build_captioner


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]


@pytest.fixture(scope="module")
def decoders(tmp_path_factory, tiny_lm):
    """The tiny Llama's decoder exported both ways: ``{"gqa": path, "eager": path}``, and its dims."""
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    dims = graphs.decoder_dims(lm)
    folder = tmp_path_factory.mktemp("decoders")
    for gqa in (True, False):
        graphs.export_decoder(lm, folder / f"{gqa}.onnx", dims, gqa=gqa)
    return {"gqa": folder / "True.onnx", "eager": folder / "False.onnx"}, dims, lm


def test_each_layer_attends_in_one_group_query_attention_node(decoders):
    paths, dims, lm = decoders
    assert attention.supports_gqa(lm)
    ops = _ops(paths["gqa"])
    assert ops.count("GroupQueryAttention") == dims["num_layers"]
    assert "Softmax" not in ops and "Expand" not in ops[len(ops) // 4 :]  # no eager attention, no repeated kv heads
    assert "Softmax" in _ops(paths["eager"])
    inputs = [i.name for i in _session(paths["gqa"]).get_inputs()]
    assert inputs == graphs.decoder_names(dims["num_layers"])[0]  # position_ids kept, though not read


def test_group_query_attention_graph_equals_the_eager_graph(decoders):
    paths, dims, _ = decoders
    fused, eager = _session(paths["gqa"]), _session(paths["eager"])
    # prefill at batch > 1, decode steps, a batch-1 chunk after a past: what decoding loops run
    for feed in decoder_probes(dims, sizes=((3, 6, 0), (2, 1, 9), (1, 5, 3), (4, 1, 1))):
        for got, want in zip(fused.run(None, feed), eager.run(None, feed)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_left_padded_rows_keep_their_tokens_distances(decoders):
    """With left padding the op rotates by cache slot, PyTorch by ``cumsum(mask) - 1``: equal attention, since a
    rotary embedding sees only distances; the real positions' logits and keys agree."""
    paths, dims, _ = decoders
    feed = decoder_probes(dims, sizes=((2, 5, 0),))[0]
    feed["attention_mask"][1, :2] = 0
    feed["position_ids"] = np.clip(np.cumsum(feed["attention_mask"], -1) - 1, 0, None)
    got, want = _session(paths["gqa"]).run(None, feed), _session(paths["eager"]).run(None, feed)
    np.testing.assert_allclose(got[0], want[0], atol=2e-5, rtol=1e-4)  # last position's logits, both rows


def test_unsupported_decoders_keep_the_traced_attention(tiny_dirs):
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_dirs("gpt2"))
    narrow = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=50))
    assert not attention.supports_gqa(gpt2)
    assert not attention.supports_gqa(narrow)  # heads 8 wide: the op rotates multiples of 16 only


@pytest.mark.parametrize("kind, op", [("siglip", "FastGelu"), ("clip", "QuickGelu")])
def test_encoder_activations_are_one_node_each(tmp_path, tiny_lm, kind, op):
    torch.manual_seed(0)
    model, _ = build_captioner(CaptionerSpec(encoder=str(make_encoder(tmp_path / kind, kind)),
                                                     decoder=str(tiny_lm)))
    image_size = model.vision_model.config.image_size
    size = (image_size, image_size)
    graphs.export_vision(model.eval(), tmp_path / "vision.onnx", size)
    ops = _ops(tmp_path / "vision.onnx")
    assert ops.count(op) == model.vision_model.config.num_hidden_layers and "Tanh" not in ops and "Sigmoid" not in ops
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = model.image_tokens(pixel_values=pixels).numpy()
    got = _session(tmp_path / "vision.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert type(model.vision_model).__call__ is torch.nn.Module.__call__  # the swap is undone after export
    assert not any("forward" in vars(m) for m in model.modules())
