"""Question answering: answer the questions of a conversation set and score them by exact match.

Each evaluation sample is a conversation whose last turn is the reference answer; the model answers the
turns before it (greedy by default). Answers are compared after :func:`normalize_for_match` (case, spaces, a
final period). Metrics: ``exact_match`` over all questions, ``exact_<kind>`` per question kind (``shapes-vqa``:
colour, count, left_of, exists, describe; files: ``kind`` of a record, else ``all``), and, where samples say
whether their scene holds a held-out colour-shape pair, ``exact_seen``/``exact_held_out`` and
``exact_<kind>_seen``/``exact_<kind>_held_out``; ``questions*`` count the questions behind each.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distilvit.conversations.dataset import ConversationDataset, load_conversations, processor_image_size
from distilvit.conversations.template import prompt_ids
from distilvit.evaluation.metrics import normalize_for_match
from distilvit.evaluation.outdir import clear_report
from distilvit.evaluation.report import write_eval_outputs, write_predictions_jsonl

logger = logging.getLogger("distilvit.evaluation")


@torch.no_grad()
def answer_questions(model, processor, rows: list[dict], *, batch_size: int = 16, progress: bool = False,
                     **generation) -> list[str]:
    """Answers to ``rows`` (``{"messages" ending with a user turn, "image": PIL or None}``), in order."""
    config = model.default_generation_config()
    config.update(**{k: v for k, v in generation.items() if v is not None})
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompts = [prompt_ids(processor, row["messages"]) for row in rows]
    # batches of similar prompts (questions of one kind) decode for about as long: little waste
    order = sorted(range(len(rows)), key=lambda i: (len(prompts[i]), i))
    answers: dict[int, str] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="answering", disable=not progress, unit="batch"):
        chunk = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), processor.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        images = [rows[i]["image"] for i in chunk if processor.image_token_id in prompts[i]]
        pixels = processor.pixel_values(images).to(device) if images else None
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), pixel_values=pixels,
                             generation_config=config)
        for i, text in zip(chunk, processor.decode(out)):
            answers[i] = text
    model.train(was_training)
    return [answers[i] for i in range(len(rows))]


def qa_metrics(records: list[dict]) -> dict[str, float | int]:
    """Exact-match metrics of ``records`` (``prediction``, ``answer``, optional ``kind`` and ``held_out``)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        right = normalize_for_match(record["prediction"]) == normalize_for_match(record["answer"])
        kind = record.get("kind") or "all"
        keys = ["exact_match", f"exact_{kind}"]
        if record.get("held_out") is not None:
            part = "held_out" if record["held_out"] else "seen"
            keys += [f"exact_{part}", f"exact_{kind}_{part}"]
        for key in keys:
            groups[key].append(right)
    metrics: dict[str, float | int] = {}
    for key in sorted(groups, key=lambda k: (k != "exact_match", k)):
        metrics[key] = sum(groups[key]) / len(groups[key])
        suffix = "" if key == "exact_match" else key[len("exact"):]
        metrics["questions" + suffix] = len(groups[key])
    return metrics


def evaluate_qa(model_path: str, datasets: list[str], *, split: str = "test", sample: int | None = None,
                out_dir: str | Path = "eval-report", fmt: str = "html", batch_size: int = 16,
                generation: dict | None = None, image_folder: str | None = None, seed: int = 42,
                blind: bool = False, model=None, revision: str | None = None, info: dict | None = None) -> dict:
    """Answer the questions of ``split`` and write ``metrics.json``, the report and ``predictions.jsonl``.

    ``model`` (a ``(model, processor)`` pair) skips loading ``model_path`` (at Hub ``revision``); ``blind`` zeroes
    the image features; ``info`` (what identifies the evaluation, see :mod:`.outdir`) goes into ``metrics.json``.
    """
    from distilvit.model import load_captioner

    samples = load_conversations(datasets, split, image_folder=image_folder, sample=sample, seed=seed,
                                 eval_sample=None)
    model, processor = model or load_captioner(model_path, revision=revision)
    ablate = model.config.ablate_image
    model.config.ablate_image = blind or ablate
    data = ConversationDataset(samples, processor_image_size(processor))
    rows = [data[i] for i in range(len(data))]
    questions = [dict(row, messages=row["messages"][:-1]) for row in rows]
    start = time.perf_counter()
    try:
        predictions = answer_questions(model, processor, questions, batch_size=batch_size, progress=True,
                                       **(generation or {}))
    finally:
        model.config.ablate_image = ablate
    seconds = time.perf_counter() - start
    records = [{"id": s["id"], "question": s.get("question", s["messages"][-2]["content"]),
                "answer": s["messages"][-1]["content"], "prediction": p, "kind": s.get("kind"),
                "held_out": s.get("held_out")} for s, p in zip(samples, predictions)]
    metrics = qa_metrics(records)
    if data.report():
        logger.warning(data.report())
    metrics["unreadable_images"] = len(data.bad_images)
    report_samples = [{"image": row["image"], "image_id": f"{r['id']}: {r['question']}", "references": [r["answer"]],
                       "prediction": r["prediction"], "question": r["question"], "kind": r["kind"],
                       "held_out": r["held_out"]} for row, r in zip(rows, records)]
    extra = {**(info or {}), "model": str(model_path), "datasets": list(datasets), "split": split, "num_questions": len(records),
             "blind": blind, "seconds_per_question": round(seconds / max(len(records), 1), 4),
             "generation": generation or {"greedy": True}}
    out_dir = Path(out_dir)
    clear_report(out_dir)  # the folder was checked before any work (evaluation/outdir.py)
    write_eval_outputs(out_dir, metrics, report_samples, fmt=fmt, extra=extra,
                       title=f"distilvit question answering: {', '.join(map(str, datasets))} / {split}")
    write_predictions_jsonl(out_dir / "predictions.jsonl", report_samples)
    return metrics
