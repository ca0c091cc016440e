"""``distilvit train``: build (or reload) a captioner, train it with ``Trainer``, save it, plot the run."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from distilvit.data import load_caption_dataset
from distilvit.errors import DistilViTError
from distilvit.evaluation import plot_training_curves
from distilvit.hub import push as hub_push
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.paths import cache_subdir
from distilvit.training import encoder_decoder
from distilvit.training.checkpoints import pause_point, staged_folder, write_run_record
from distilvit.training.collator import CaptionCollator
from distilvit.training.identity import check_weights_fit, plan_run, run_record
from distilvit.training.trainer import CaptionEvalSet, CaptionTrainer, pick_device, pick_precision

logger = logging.getLogger("distilvit.training")

LOWER_IS_BETTER = {"loss"}


@dataclass
class TrainOptions:
    """All options of ``distilvit train`` (see ``distilvit train --help`` for their meaning)."""

    datasets: list[str] = field(default_factory=lambda: ["shapes"])
    stage: str | None = None  # None: caption training; "pretrain"/"instruct": training/instruct.py
    image_folder: str | None = None  # images of conversation files (--stage instruct)
    model: CaptionerSpec = field(default_factory=CaptionerSpec)
    base_model: str | None = None
    base_model_revision: str | None = None  # --revision: Hub revision of --base-model
    save_dir: str = "distilvit-model"
    checkpoints_dir: str | None = None  # None: "<save_dir>-checkpoints"
    resume_from: str | None = None  # a checkpoint to resume from even if it belongs to a different run
    overwrite_checkpoints: bool = False  # delete other runs' checkpoints in checkpoints_dir instead of refusing
    overwrite_save_dir: bool = False  # replace another run's model in save_dir instead of refusing
    num_train_epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 8
    eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    projection_lr: float = 3e-4
    lora_lr: float = 1e-4
    vision_lr: float | None = None
    learning_rate: float | None = None  # --architecture encoder-decoder only: one rate for all weights
    weight_decay: float = 0.01
    warmup_steps: float = 200
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 3
    logging_steps: int = 10
    sample: int | None = None
    eval_sample: int | None = 200
    eval_captions: int = 100
    metric_for_best_model: str = "cider"
    early_stopping_patience: int = 3
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    cache_dir: str | None = None
    prune_cache: bool = False
    debug: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None
    blind: bool = False
    merge_lora: bool = False
    num_workers: int = 0
    # frozen-encoder feature cache (docs/feature-cache.md): None = on exactly when the encoder is frozen
    cache_features: bool | None = None
    feature_dtype: str = "fp16"
    feature_cache_dir: str | None = None
    # lean training step (each a switch with a measured default; see docs/speed.md)
    loss_logits: str = "caption"
    pad_to_max_length: bool = False
    group_by_length: bool = True
    torch_compile: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"


@dataclass
class TrainResult:
    save_dir: Path
    metrics: dict
    log_history: list[dict]
    already_finished: bool = False  # nothing was trained: --save-dir already held this run's model


def checkpoints_dir(opts: TrainOptions) -> str:
    """``--checkpoints-dir``, by default ``<save-dir>-checkpoints`` (a sibling: the save dir is replaced whole)."""
    return opts.checkpoints_dir or f"{str(opts.save_dir).rstrip('/')}-checkpoints"


def training_arguments(opts: TrainOptions, device: str, precision: str) -> TrainingArguments:
    metric = opts.metric_for_best_model
    return TrainingArguments(
        output_dir=checkpoints_dir(opts),
        num_train_epochs=opts.num_train_epochs,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.eval_batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps,
        learning_rate=opts.lora_lr,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_steps,
        lr_scheduler_type="cosine",
        eval_strategy="steps",
        eval_steps=opts.eval_steps,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        load_best_model_at_end=True,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        metric_for_best_model=f"eval_{metric}",
        greater_is_better=metric not in LOWER_IS_BETTER,
        logging_steps=opts.logging_steps,
        report_to="none",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_num_workers=opts.num_workers,
        remove_unused_columns=False,
        seed=opts.seed,
        push_to_hub=False,  # distilvit.hub.push uploads the final folder, never Trainer's checkpoints
        disable_tqdm=False,
        torch_compile=opts.torch_compile,
        activation_checkpointing=opts.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if opts.gradient_checkpointing else None,
    )


def load_splits(opts: TrainOptions):
    cache = cache_subdir(opts.cache_dir, "datasets")
    train = load_caption_dataset(opts.datasets, "train", sample=opts.sample, seed=opts.seed, cache_dir=cache)
    validation = load_caption_dataset(opts.datasets, "validation", sample=opts.eval_sample, seed=opts.seed,
                                      cache_dir=cache)
    logger.info("training on %d images, validating on %d", len(train), len(validation))
    return train, validation


def build_or_load(opts: TrainOptions):
    if opts.base_model:
        model, processor = load_captioner(opts.base_model, revision=opts.base_model_revision)
        model.train()
        return model, processor
    spec = opts.model
    if opts.cache_dir:
        spec = replace(spec, cache_dir=cache_subdir(opts.cache_dir, "models"))
    return build_captioner(spec)


def configure_step(model, opts: TrainOptions) -> None:
    """Apply the training-step switches that live on the model (logits, attention backend)."""
    if opts.loss_logits not in ("caption", "full"):
        raise DistilViTError(f"unknown --loss-logits {opts.loss_logits!r}; use caption or full.")
    model.loss_logits = opts.loss_logits
    if opts.attn_implementation != "sdpa":
        model.language_model.set_attn_implementation(opts.attn_implementation)


def caption_lengths(dataset, processor) -> list[int]:
    """Token length of each row's first caption (reads only the captions column; no image is decoded)."""
    first = [captions[0] for captions in dataset["captions"]]
    return [len(ids) for ids in processor.tokenizer(first, add_special_tokens=False).input_ids]


def training_data(opts: TrainOptions, model, processor, device: str, train_set, validation_set):
    """The train/validation data the Trainer reads: cached encoder features when caching is on, else images."""
    from distilvit.features import cached_feature_sets, use_feature_cache

    if not use_feature_cache(opts.cache_features, model):
        return train_set, validation_set
    return tuple(cached_feature_sets(model, processor, [train_set, validation_set], dtype=opts.feature_dtype,
                                     cache_dir=opts.feature_cache_dir, device=device))


@dataclass
class RunParts:
    """What a run trains and on what: the parts in which captioning and instruction tuning differ
    (:func:`prepare_captioning` here, ``training.instruct.prepare_instruct``); the run itself is the same."""

    model: torch.nn.Module
    processor: object
    train_data: object
    eval_data: object
    collator: Callable
    learning_rates: dict
    train_lengths: list[int] | None = None
    caption_eval: CaptionEvalSet | None = None
    finish: Callable[[dict], None] | None = None  # adds the run's own figures to the final metrics


def prefix_learning_rates(opts: TrainOptions) -> dict[str, float]:
    return {"projection_lr": opts.projection_lr, "lora_lr": opts.lora_lr,
            "vision_lr": opts.vision_lr if opts.vision_lr is not None else opts.projection_lr}


def prepare_captioning(opts: TrainOptions, device: str, is_encoder_decoder: bool) -> RunParts:
    """Caption data (cached encoder features when caching is on) and a new or reloaded captioner."""
    train_set, validation_set = load_splits(opts)
    model, processor = build_or_load(opts)
    if not is_encoder_decoder:  # prefix-architecture switches (the encoder-decoder trains its encoder: no cache)
        model.config.ablate_image = opts.blind or model.config.ablate_image
        configure_step(model, opts)
    model.train()  # from_pretrained returns eval mode; dropout and checkpointing need train mode
    train_data, eval_data = (
        (train_set, validation_set) if is_encoder_decoder
        else training_data(opts, model, processor, device, train_set, validation_set)
    )
    return RunParts(
        model=model, processor=processor, train_data=train_data, eval_data=eval_data,
        collator=CaptionCollator(processor, train=True, seed=opts.seed, pad_to_max_length=opts.pad_to_max_length),
        learning_rates=encoder_decoder.learning_rates(opts) if is_encoder_decoder else prefix_learning_rates(opts),
        train_lengths=caption_lengths(train_set, processor) if opts.group_by_length else None,
        caption_eval=CaptionEvalSet(validation_set, limit=opts.eval_captions) if opts.eval_captions else None,
    )


def run_training(opts: TrainOptions, prepare: Callable | None = None) -> TrainResult:
    """Train end to end; returns where the model was saved and its final validation metrics.

    ``prepare(opts, device, is_encoder_decoder) -> RunParts`` builds the model and data (default: captioning).
    Every run, whatever it trains, gets the same guarantees: the checks before any work, the run identity
    (``training/identity.py``), crash-safe checkpoints and an exact resume, the atomic final save and the push.
    """
    if opts.early_stopping_patience < 1:
        raise DistilViTError("--early-stopping-patience must be at least 1.")
    hub_target = hub_push.preflight(opts.push_to_hub, opts.hub_model_id, opts.save_dir)  # fails before training
    is_encoder_decoder = encoder_decoder.check_architecture_options(opts) == encoder_decoder.ENCODER_DECODER
    opts = replace(opts, checkpoints_dir=checkpoints_dir(opts))
    plan = plan_run(opts, run_record(opts)["fingerprint"])
    if plan.finished:
        return finished_result(opts)
    set_seed(opts.seed)
    device = pick_device(opts.device)
    precision = pick_precision(opts.precision, device)
    parts = (prepare or prepare_captioning)(opts, device, is_encoder_decoder)
    logger.info("device %s, precision %s, %s trainable parameters", device, precision, _count_trainable(parts.model))
    trainer = CaptionTrainer(
        model=parts.model,
        args=training_arguments(opts, device, precision),
        train_dataset=parts.train_data,
        eval_dataset=parts.eval_data,
        data_collator=parts.collator,
        train_lengths=parts.train_lengths,
        caption_processor=parts.processor,
        learning_rates=parts.learning_rates,
        caption_eval=parts.caption_eval,
        debug=opts.debug,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience)],
        run_record=run_record(opts),
    )
    if plan.resume:
        check_weights_fit(parts.model, plan.resume)
    if plan.checkpoint_finished:
        logger.info("training already ended at %s; saving its final model, training nothing", plan.resume)
        trainer.finish_from_checkpoint(plan.resume)
    else:
        if plan.resume:
            logger.info("resuming from %s", plan.resume)
        trainer.train(resume_from_checkpoint=str(plan.resume) if plan.resume else None)
    metrics = trainer.evaluate()
    if parts.finish:
        parts.finish(metrics)
    save_dir = save_trained(trainer, parts.processor, opts, metrics)
    if hub_target:
        hub_push.push_model(hub_target, save_dir, metrics=metrics, options=_jsonable(asdict(opts)))
    if opts.prune_cache and opts.cache_dir:
        dataset_cache = cache_subdir(opts.cache_dir, "datasets")
        shutil.rmtree(dataset_cache, ignore_errors=True)
        logger.info("pruned the dataset cache %s", dataset_cache)
    return TrainResult(save_dir=save_dir, metrics=metrics, log_history=trainer.state.log_history)


def save_trained(trainer: CaptionTrainer, processor, opts: TrainOptions, metrics: dict) -> Path:
    """Save model + processor + training log + curves + run record to ``opts.save_dir``, atomically: written
    into a staging sibling and swapped in complete (a kill leaves the old model or the new one)."""
    save_dir = Path(opts.save_dir)
    if opts.merge_lora and trainer.model.has_lora():
        logger.info("merged LoRA into %d LM layers before saving", trainer.model.merge_lora())
    with staged_folder(save_dir) as staging:
        trainer.model.save_pretrained(staging)
        pause_point("final-weights")
        processor.save_pretrained(staging)
        record = {"options": _jsonable(asdict(opts)), "final_metrics": metrics, "log_history": trainer.state.log_history}
        (staging / "training_log.json").write_text(json.dumps(record, indent=2, default=str))
        try:
            plot_training_curves(trainer.state.log_history, staging / "training_curves.png")
        except DistilViTError as err:  # e.g. a run too short to log anything
            logger.warning("no training curves: %s", err)
        write_run_record(staging, run_record(opts))
        pause_point("final-complete")
    return save_dir


def finished_result(opts: TrainOptions) -> TrainResult:
    """The run is already finished (its model is in ``--save-dir``): report it, train nothing."""
    save_dir = Path(opts.save_dir)
    logger.info("this run is already finished: %s holds its model; nothing to train", save_dir)
    try:
        log = json.loads((save_dir / "training_log.json").read_text())
    except (OSError, ValueError):
        log = {}
    return TrainResult(save_dir=save_dir, metrics=log.get("final_metrics", {}), log_history=log.get("log_history", []),
                       already_finished=True)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _count_trainable(model: torch.nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} of {total:,}"
