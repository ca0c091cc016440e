"""What makes cached encoder features valid: the store key and the per-image content digest.

A store (one folder of the feature cache) holds the features of one *encoder setting*: the encoder's
identity (name or path, Hub revision, a fingerprint of its weights and its architecture config), the image
preprocessing, which hidden state is read and how, and the storage dtype. Anything that changes the
features changes the key, so a changed encoder is never served stale features: it gets a new store.

Inside a store every entry is keyed by the sha256 of the image's content, so a changed image is a miss.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from distilvit.errors import DistilViTError

#: ``--feature-dtype`` names -> torch dtypes of the stored features
FEATURE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# config entries that describe how a model is run or saved, not what it computes
_VOLATILE_CONFIG = {
    "transformers_version", "architectures", "dtype", "torch_dtype", "output_hidden_states", "output_attentions",
    "return_dict", "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "use_cache",
}


@dataclass(frozen=True)
class FeatureKey:
    """Everything the cached features of an image depend on, besides the image itself."""

    encoder: str  # name_or_path of the encoder ("" when built in memory)
    revision: str | None  # Hub commit hash of the encoder, when it came from the Hub
    weights: str  # sha256 of the encoder's state dict (names, dtypes, shapes, values)
    architecture: dict  # the encoder config, without run-time settings
    preprocessing: dict  # the image processor's settings (to_dict) and class
    feature_layer: int
    select_strategy: str
    dtype: str  # storage dtype: fp16, bf16 or fp32

    def as_dict(self) -> dict:
        return asdict(self)

    def canonical(self) -> str:
        """A stable JSON text of the key (sorted keys; enums as their values)."""
        return json.dumps(self.as_dict(), sort_keys=True, default=_json_default)

    @property
    def digest(self) -> str:
        """The store's folder name: the first 16 hex digits of the key's sha256."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]


def _json_default(value):
    if hasattr(value, "value"):  # enums such as PIL's Resampling
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def check_feature_dtype(name: str) -> torch.dtype:
    """``fp16``/``bf16``/``fp32`` -> torch dtype, or a :class:`DistilViTError` naming the choices."""
    if name not in FEATURE_DTYPES:
        raise DistilViTError(f"unknown feature dtype {name!r}; use one of {', '.join(FEATURE_DTYPES)}.")
    return FEATURE_DTYPES[name]


@torch.no_grad()
def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over every tensor of ``module.state_dict()`` (name, dtype, shape and bytes), in name order.

    Buffers count too (e.g. batch-norm statistics). Costs one read of the weights (~0.3 s per 100M fp32
    parameters), so a checkpoint overwritten in place is always noticed.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        raw = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().data)
    return digest.hexdigest()


def architecture_of(config) -> dict:
    """The encoder config as a dict, without private fields and run-time settings."""
    return {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG}


def feature_key(model, processor, dtype: str = "fp16") -> FeatureKey:
    """The :class:`FeatureKey` of ``model``'s encoder as used with ``processor``'s image preprocessing.

    Args:
        model: a :class:`~distilvit.model.DistilViTForCaptioning` (its ``vision_model`` and config are read).
        processor: its :class:`~distilvit.model.CaptionProcessor` (only ``image_processor`` matters).
        dtype: storage dtype name (``fp16``, ``bf16`` or ``fp32``).
    """
    check_feature_dtype(dtype)
    vision = model.vision_model
    image_processor = processor.image_processor
    preprocessing = dict(image_processor.to_dict(), _class=type(image_processor).__name__)
    return FeatureKey(
        encoder=str(getattr(vision.config, "name_or_path", "") or ""),
        revision=getattr(vision.config, "_commit_hash", None),
        weights=weights_fingerprint(vision),
        architecture=architecture_of(vision.config),
        preprocessing=json.loads(json.dumps(preprocessing, sort_keys=True, default=_json_default)),
        feature_layer=int(model.config.vision_feature_layer),
        select_strategy=str(model.config.vision_feature_select_strategy),
        dtype=dtype,
    )


def image_digest(value, mode: str | None = None) -> bytes:
    """32-byte sha256 of one image's content.

    Args:
        value: a ``datasets.Image`` storage value (``{"bytes": ..., "path": ...}``: the encoded bytes are
            hashed, read from ``path`` when there are none) or a decoded ``PIL.Image`` (mode, size and
            pixel bytes are hashed).
        mode: the ``datasets.Image`` feature's conversion mode, if any (it changes the decoded pixels).
    """
    digest = hashlib.sha256(f"mode={mode}|".encode())
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None:
            path = value.get("path")
            if not path:
                raise DistilViTError("an image row has neither bytes nor a path; the dataset is malformed.")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise DistilViTError(f"cannot read image {path}: {err.strerror or err}") from err
        digest.update(b"encoded|")
        digest.update(data)
        return digest.digest()
    digest.update(f"pixels|{value.mode}|{value.size}|".encode())
    digest.update(value.tobytes())
    return digest.digest()
