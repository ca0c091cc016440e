"""Encoder activations as single onnxruntime contrib nodes (export only).

The TorchScript exporter writes the tanh approximation of GELU (SigLIP's ``gelu_pytorch_tanh``, GPT-2's
``gelu_new``) as eight elementwise nodes and CLIP's ``quick_gelu`` as three, each a pass over a ``(B, N, 4 D)``
tensor; onnxruntime's ``com.microsoft.FastGelu`` and ``QuickGelu`` compute the same functions in one pass, on
CPU and in onnxruntime-web. While :func:`fused_activations` is active, those activation modules run through
:class:`FastGelu` / :class:`QuickGelu`: in PyTorch the usual computation (what tracing runs), in the exported
graph one contrib node (their ``symbolic``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from transformers.activations import (
    FastGELUActivation,
    GELUTanh,
    NewGELUActivation,
    QuickGELUActivation,
)

from distilvit.export.nbits import MS

QUICK_GELU_ALPHA = 1.702


class FastGelu(torch.autograd.Function):
    """``x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``, any shape."""

    @staticmethod
    def forward(ctx, x):
        return nn.functional.gelu(x, approximate="tanh")

    @staticmethod
    def symbolic(g, x):
        out = g.op(f"{MS}::FastGelu", x)
        out.setType(x.type())
        return out


class QuickGelu(torch.autograd.Function):
    """``x * sigmoid(1.702 x)``, any shape."""

    @staticmethod
    def forward(ctx, x):
        return x * torch.sigmoid(QUICK_GELU_ALPHA * x)

    @staticmethod
    def symbolic(g, x):
        out = g.op(f"{MS}::QuickGelu", x, alpha_f=QUICK_GELU_ALPHA)
        out.setType(x.type())
        return out


FUSED = ((GELUTanh, FastGelu), (NewGELUActivation, FastGelu), (FastGELUActivation, FastGelu),
         (QuickGELUActivation, QuickGelu))


@contextmanager
def fused_activations(model: nn.Module):
    """Route ``model``'s tanh-GELU and quick-GELU modules through the contrib-op functions; restored after."""
    swapped = []
    for module in model.modules():
        function = next((fn for kind, fn in FUSED if isinstance(module, kind)), None)
        if function is not None:
            module.forward = function.apply  # instance attribute: nn.Module.__call__ finds it first
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward
