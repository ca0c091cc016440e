"""``distilvit eval``: caption a dataset split with a trained model, score it, write a report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distilvit.conversations.dataset import is_conversation_spec
from distilvit.errors import DistilViTError
from distilvit.data.loader import load_caption_rows
from distilvit.evaluation.metrics import score_captions
from distilvit.evaluation.outdir import check_out_dir, clear_report, default_out_dir
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
    out_dir: str | Path | None = None,
    fmt: str = "html",
    batch_size: int = 16,
    use_meteor: bool = True,
    generation: dict | None = None,
    seed: int = 42,
    overwrite: bool = False,
    revision: str | None = None,
    image_folder: str | None = None,
    blind: bool = False,
) -> dict:
    """Caption ``split`` of ``datasets`` (``"all"``: every row) and write ``metrics.json``, the report and
    ``predictions.jsonl`` into ``out_dir`` (default ``eval-<model name>``; see :mod:`.outdir` for when an
    existing report is replaced).

    Returns the metrics (caption metrics, plus grounding accuracies when every dataset is ``shapes``).
    Conversation sets (``shapes-vqa``, .json/.jsonl conversation files) are scored as question answering
    (:func:`distilvit.evaluation.qa.evaluate_qa`); ``blind`` zeroes the image features.
    """
    from distilvit.model import load_captioner
    from distilvit.model.captioning import generate_captions

    identity = {"model": str(model_path), "revision": revision, "datasets": list(datasets), "split": split,
                "sample": sample, "generation": generation or {"greedy": True}, "blind": blind,
                "image_folder": image_folder}
    out_dir = check_out_dir(out_dir or default_out_dir(str(model_path)), identity, overwrite=overwrite)
    if any(is_conversation_spec(str(name)) for name in datasets):
        return evaluate_qa(model_path, datasets, split=split, sample=sample, out_dir=out_dir, fmt=fmt,
                           batch_size=batch_size, generation=generation, image_folder=image_folder, seed=seed,
                           blind=blind, revision=revision, info=identity)
    data, counts = load_caption_rows(datasets, split, sample=sample, seed=seed)
    total = "an unknown number of" if counts.total is None else counts.total
    logger.info("evaluating %d of %s rows (%s split of %s: %d rows)", counts.loaded, total, split,
                ", ".join(datasets), counts.in_split)
    model, processor = load_captioner(model_path, revision=revision)
    if blind:
        if not hasattr(model.config, "ablate_image"):
            raise DistilViTError("--blind zeroes the image tokens of the prefix architecture; this encoder-decoder "
                                 "model has none (its decoder reads the encoder through cross-attention).")
        model.config.ablate_image = True
    images = [row["image"] for row in data]
    references = [row["captions"] for row in data]
    start = time.perf_counter()
    predictions = generate_captions(model, processor, images, batch_size=batch_size, progress=True, **(generation or {}))
    seconds = time.perf_counter() - start
    metrics, scoring = score_captions(predictions, references, use_meteor=use_meteor)
    if all(name == "shapes" for name in datasets):
        metrics.update(shapes_accuracy(predictions, references))
    samples = [
        {"image": img, "image_id": row_id, "references": refs, "prediction": pred}
        for img, row_id, refs, pred in zip(images, data["image_id"], references, predictions)
    ]
    extra = {
        **identity, "num_images": len(samples), "rows_evaluated": counts.loaded, "rows_in_split": counts.in_split,
        "rows_total": counts.total, "seconds_per_image": round(seconds / max(len(samples), 1), 4), **scoring,
    }
    clear_report(out_dir)
    paths = write_eval_outputs(out_dir, metrics, samples, title=f"distilvit evaluation: {', '.join(datasets)} / {split}",
                               fmt=fmt, extra=extra)
    write_predictions_jsonl(out_dir / "predictions.jsonl", samples)
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return metrics
