"""``distilvit eval``: caption a dataset split with a trained model, score it, write a report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distilvit.conversations.dataset import is_conversation_spec
from distilvit.data import load_caption_dataset
from distilvit.evaluation.metrics import compute_caption_metrics
from distilvit.evaluation.qa import evaluate_qa
from distilvit.evaluation.report import write_eval_outputs, write_predictions_jsonl
from distilvit.evaluation.shapes_accuracy import shapes_accuracy

logger = logging.getLogger("distilvit.evaluation")


def evaluate_model(
    model_path: str,
    datasets: list[str],
    *,
    split: str = "test",
    sample: int | None = None,
    out_dir: str | Path = "eval-report",
    fmt: str = "html",
    batch_size: int = 16,
    use_meteor: bool = True,
    generation: dict | None = None,
    seed: int = 42,
    image_folder: str | None = None,
    blind: bool = False,
) -> dict:
    """Caption ``split`` of ``datasets`` and write ``metrics.json``, the report and ``predictions.jsonl``.

    Returns the metrics (caption metrics, plus grounding accuracies when every dataset is ``shapes``).
    Conversation sets (``shapes-vqa``, .json/.jsonl conversation files) are scored as question answering
    (:func:`distilvit.evaluation.qa.evaluate_qa`); ``blind`` zeroes the image features.
    """
    if any(is_conversation_spec(str(name)) for name in datasets):
        return evaluate_qa(model_path, datasets, split=split, sample=sample, out_dir=out_dir, fmt=fmt,
                           batch_size=batch_size, generation=generation, image_folder=image_folder, seed=seed,
                           blind=blind)
    from distilvit.model import load_captioner
    from distilvit.model.captioning import generate_captions

    data = load_caption_dataset(datasets, split, sample=sample, seed=seed)
    model, processor = load_captioner(model_path)
    model.config.ablate_image = blind or model.config.ablate_image
    images = [row["image"] for row in data]
    references = [row["captions"] for row in data]
    start = time.perf_counter()
    predictions = generate_captions(model, processor, images, batch_size=batch_size, progress=True, **(generation or {}))
    seconds = time.perf_counter() - start
    metrics = compute_caption_metrics(predictions, references, use_meteor=use_meteor)
    if all(name == "shapes" for name in datasets):
        metrics.update(shapes_accuracy(predictions, references))
    samples = [
        {"image": img, "image_id": row_id, "references": refs, "prediction": pred}
        for img, row_id, refs, pred in zip(images, data["image_id"], references, predictions)
    ]
    out_dir = Path(out_dir)
    extra = {
        "model": str(model_path), "datasets": datasets, "split": split, "num_images": len(samples),
        "seconds_per_image": round(seconds / max(len(samples), 1), 4), "generation": generation or {"greedy": True},
    }
    paths = write_eval_outputs(out_dir, metrics, samples, title=f"distilvit evaluation: {', '.join(datasets)} / {split}",
                               fmt=fmt, extra=extra)
    write_predictions_jsonl(out_dir / "predictions.jsonl", samples)
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return metrics
