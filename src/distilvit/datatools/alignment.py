"""Image-text alignment per example, for the quality report.

* ``--model``: a distilvit captioner (folder or Hub id, :func:`distilvit.model.load_captioner`). The score of
  an image is the mean, over its captions, of the caption's mean token log-likelihood given the image
  (``-loss`` of the model's own training objective); higher is better, 0 is the maximum.
* ``--clip-model``: a CLIP model (``transformers`` ``CLIPModel``-like: ``get_image_features`` and
  ``get_text_features``, with its tokenizer and image processor in the same folder or Hub repo). The score
  of an image is the mean cosine similarity between its image embedding and its captions' text embeddings.

Both run without gradients, in batches, with a progress bar.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from tqdm.auto import tqdm

from distilvit.errors import ModelError


def _image(value: dict):
    from PIL import Image

    return Image.open(io.BytesIO(value["bytes"])).convert("RGB")


def caption_log_likelihood(model_name: str, images: Sequence[dict], captions: Sequence[list[str]], *,
                           batch_size: int = 16) -> list[float]:
    """Mean caption log-likelihood per image under a distilvit captioner (see the module docstring)."""
    import torch

    from distilvit.model import load_captioner

    model, processor = load_captioner(model_name)
    scores: list[float] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="caption log-likelihood", unit="batch"):
            pixel_values = processor.pixel_values([_image(v) for v in images[start:start + batch_size]])
            for row, row_captions in enumerate(captions[start:start + batch_size]):
                values = []
                for caption in row_captions:
                    batch = processor.training_batch([caption])
                    batch["pixel_values"] = pixel_values[row:row + 1]
                    values.append(-float(model(**batch).loss))
                scores.append(sum(values) / len(values) if values else float("nan"))
    return scores


def clip_similarity(model_name: str, images: Sequence[dict], captions: Sequence[list[str]], *,
                    batch_size: int = 32) -> list[float]:
    """Mean image-caption cosine similarity per image under a CLIP model (see the module docstring)."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(model_name).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        image_processor = AutoImageProcessor.from_pretrained(model_name)
    except (OSError, ValueError) as err:
        raise ModelError(f"--clip-model {model_name}: cannot load a CLIP model, tokenizer and image processor from "
                         f"it ({type(err).__name__}: {str(err).splitlines()[0]}). Give a local folder or a cached Hub "
                         "id of a CLIP model.") from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelError(f"--clip-model {model_name} is a {type(model).__name__}, not a CLIP-style model "
                         "(get_image_features and get_text_features).")
    max_length = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", 77)
    scores: list[float] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="CLIP similarity", unit="batch"):
            chunk = [_image(v) for v in images[start:start + batch_size]]
            rows = captions[start:start + batch_size]
            image_embeds = _features(model.get_image_features(**image_processor(images=chunk, return_tensors="pt")))
            flat = [c for row in rows for c in row]
            text = tokenizer(flat, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            text.pop("token_type_ids", None)
            text_embeds = _features(model.get_text_features(**text))
            image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
            text_embeds = torch.nn.functional.normalize(text_embeds, dim=-1)
            position = 0
            for row, row_captions in enumerate(rows):
                sims = text_embeds[position:position + len(row_captions)] @ image_embeds[row]
                position += len(row_captions)
                scores.append(float(sims.mean()) if len(row_captions) else float("nan"))
    return scores


def _features(output):
    """``get_*_features`` returns a tensor (or, in some versions, an output object with ``pooler_output``)."""
    return output if hasattr(output, "dim") else output.pooler_output
