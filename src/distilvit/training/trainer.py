"""The Hugging Face ``Trainer`` specialised for captioning.

* separate learning rates for the projection, the LoRA adapters and any unfrozen encoder layers;
* caption metrics (BLEU, ROUGE-L, CIDEr, ...) from generated captions, computed inside the evaluation loop so
  that early stopping and best-checkpoint selection can use them;
* the processor is saved into every checkpoint, so any checkpoint folder is a loadable model;
* checkpoints are crash-safe: written into a hidden staging folder, completed (processor, run record), fsynced
  and only then renamed to ``checkpoint-N`` (training/checkpoints.py);
* the data order is a function of (seed, epoch) only (optionally length-grouped, so dynamic padding has little
  left to pad), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from distilvit.evaluation import compute_caption_metrics
from distilvit.model.captioning import generate_captions
from distilvit.training.checkpoints import TRAINER_STATE, pause_point, publish, staging_path, write_run_record
from distilvit.training.sampling import EpochSampler

logger = logging.getLogger("distilvit.training")


def parameter_groups(model, *, projection_lr: float, lora_lr: float, vision_lr: float, weight_decay: float):
    """AdamW parameter groups by part of the model; frozen parameters are left out."""
    groups = {"projection": [], "lora": [], "vision": [], "other": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("projection."):
            groups["projection"].append(param)
        elif "lora_" in name:
            groups["lora"].append(param)
        elif name.startswith("vision_model."):
            groups["vision"].append(param)
        else:
            groups["other"].append(param)
    lrs = {"projection": projection_lr, "lora": lora_lr, "vision": vision_lr, "other": lora_lr}
    return [
        {"params": params, "lr": lrs[key], "weight_decay": weight_decay, "name": key}
        for key, params in groups.items()
        if params
    ]


class CaptionEvalSet:
    """Images and reference captions on which generated captions are scored during evaluation."""

    def __init__(self, dataset, limit: int | None = None):
        rows = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
        self.images = [row["image"] for row in rows]
        self.references = [row["captions"] for row in rows]


class CaptionTrainer(Trainer):
    def __init__(self, *args, caption_processor, learning_rates: dict, caption_eval: CaptionEvalSet | None = None,
                 generation: dict | None = None, debug: bool = False, train_lengths: list[int] | None = None,
                 run_record: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_lengths = train_lengths
        self.caption_processor = caption_processor
        self.learning_rates = learning_rates
        self.caption_eval = caption_eval
        self.generation = generation or {}
        self.debug = debug
        self.run_record = run_record  # written into each checkpoint (training/identity.py)
        self._staging_root: str | None = None

    def _get_train_sampler(self, train_dataset=None):
        """An order fixed by (seed, epoch); with ``train_lengths``, batches of similar caption length (less
        padding), shuffled in groups. The collator hears the epoch too (its caption choice depends on it)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return EpochSampler(len(dataset), seed=self.args.seed, lengths=self.train_lengths,
                            batch_size=self.args.train_batch_size * self.args.gradient_accumulation_steps,
                            on_epoch=getattr(self.data_collator, "set_epoch", None))

    def get_eval_dataloader(self, eval_dataset=None):
        """Evaluation loss on each row's first caption, whatever the training collator draws (and its epoch)."""
        train_collator = self.data_collator
        if hasattr(train_collator, "for_evaluation"):
            self.data_collator = train_collator.for_evaluation()
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        pause_point("mid-step", self.state.global_step + 1)  # crash tests: gradients made, optimizer not stepped
        return loss

    def _get_output_dir(self, trial):
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, written into a staging folder, completed with the processor and the run record,
        then renamed to ``checkpoint-N`` in one step; older checkpoints are rotated out only after that."""
        run_dir = Path(super()._get_output_dir(trial))
        run_dir.mkdir(parents=True, exist_ok=True)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = run_dir / name
        root = staging_path(final)
        root.mkdir()
        self._staging_root = str(root)
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only the staging folder: a no-op
        finally:
            self._staging_root = None
        staged = root / name
        if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint) == staged:
            self.state.best_model_checkpoint = str(final)  # the path it will have once published
            self.state.save_to_json(str(staged / TRAINER_STATE))
        self.caption_processor.save_pretrained(staged)
        pause_point("checkpoint-staged", self.state.global_step)
        if self.run_record is not None:
            write_run_record(staged, self.run_record)
        pause_point("checkpoint-complete", self.state.global_step)
        publish(staged, final)
        shutil.rmtree(root, ignore_errors=True)
        pause_point("checkpoint-published", self.state.global_step)
        if self.args.should_save:
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def finish_from_checkpoint(self, checkpoint: Path) -> None:
        """Training already ended at ``checkpoint`` (killed while saving the final model): restore its state and
        the weights the uninterrupted run ends with (the best checkpoint's, else its own), train nothing."""
        self.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE))
        best = self.state.best_model_checkpoint
        use_best = self.args.load_best_model_at_end and best and Path(best).is_dir()
        self._load_from_checkpoint(str(best if use_best else checkpoint))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = parameter_groups(
                model or self.model, weight_decay=self.args.weight_decay, **self.learning_rates
            )
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _issue_warnings_after_load(self, load_result):
        """Tied weights (e.g. an LM head that shares the input embedding) are not stored in checkpoints;
        re-tie them instead of warning that they are missing."""
        tied = set(getattr(self.model, "all_tied_weights_keys", {}) or {})
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(type(load_result)(missing, load_result.unexpected_keys))

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=True, ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        if self.caption_eval is not None:
            metrics = self.caption_metrics()
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output

    def caption_metrics(self) -> dict[str, float]:
        """Generate captions for the evaluation images and score them (METEOR off: it costs a JVM)."""
        start = time.perf_counter()
        predictions = generate_captions(
            self.model, self.caption_processor, self.caption_eval.images,
            batch_size=self.args.per_device_eval_batch_size, **self.generation,
        )
        metrics = compute_caption_metrics(predictions, self.caption_eval.references, use_meteor=False)
        metrics = {k: v for k, v in metrics.items() if v is not None}
        metrics["caption_seconds"] = round(time.perf_counter() - start, 2)
        metrics["empty_captions"] = sum(not p for p in predictions) / max(len(predictions), 1)
        if self.debug:
            for pred, refs in list(zip(predictions, self.caption_eval.references))[:5]:
                logger.info("sample prediction: %r | reference: %r", pred, refs[0])
        return metrics


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> cuda > mps > cpu; an explicit device must exist."""
    from distilvit.errors import DistilViTError

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if requested == "auto":
        return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if requested not in available:
        raise DistilViTError(f"unknown device {requested!r}; use auto, cpu, cuda or mps.")
    if not available[requested]:
        raise DistilViTError(f"device {requested!r} is not available on this machine; use --device auto.")
    return requested


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(requested: str, device: str) -> str:
    """``auto`` -> bf16 on CUDA with bf16 support (else fp16) and on bf16-capable CPUs, else fp32."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu" and cpu_supports_bf16():
        return "bf16"
    return "fp32"
