"""The two-stage recipe (LLaVA-1.5): ``--stage pretrain`` then ``--stage instruct``.

* ``pretrain``: the projection alone learns on captions (LoRA off, LM and encoder frozen); an ordinary
  ``distilvit train`` run otherwise (:func:`distilvit.training.run.run_training`), see :func:`stage_spec`.
* ``instruct``: from the stage-1 model given by ``--base-model``, the projection and LoRA adapters (added here
  when the stage-1 model has none) learn on conversations (:mod:`distilvit.conversations`): only the
  assistant replies are learned. Text goes through the LM's chat template when it has one, so the saved
  model's caption prompt becomes a user turn too (captioning = one fixed instruction).

The saved model has the usual format (one safetensors file with projection and LoRA weights beside the LM,
``config.json``, the processor), so :func:`distilvit.model.load_captioner` reloads it in one call.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from distilvit.conversations.collator import ConversationCollator
from distilvit.conversations.dataset import ConversationDataset, load_conversations, processor_image_size
from distilvit.conversations.template import has_chat_template
from distilvit.errors import DistilViTError
from distilvit.model import load_captioner
from distilvit.model.lora import add_lora, default_target_modules
from distilvit.model.processing import CaptionProcessor
from distilvit.training.run import (
    RunParts,
    TrainOptions,
    TrainResult,
    configure_step,
    prefix_learning_rates,
    run_training,
)

logger = logging.getLogger("distilvit.training")

STAGES = ("pretrain", "instruct")


def stage_spec(stage: str | None, spec):
    """The model options of a stage: ``pretrain`` trains the projection only (no LoRA)."""
    if stage not in (None, *STAGES):
        raise DistilViTError(f"unknown --stage {stage!r}; use pretrain or instruct.")
    return replace(spec, use_lora=False) if stage == "pretrain" else spec


def chat_processor(processor: CaptionProcessor) -> CaptionProcessor:
    """The processor with the chat template switched on when the LM's tokenizer has one."""
    if processor.chat_template or not has_chat_template(processor.tokenizer):
        return processor
    return CaptionProcessor(processor.tokenizer, processor.image_processor, num_image_tokens=processor.num_image_tokens,
                            prompt=processor.prompt, max_length=processor.max_length, chat_template=True)


def ensure_lora(model, opts: TrainOptions) -> None:
    """Add fresh LoRA adapters (zero-initialised B: the LM starts unchanged) to a model that has none, then make
    exactly the projection, the adapters and the encoder layers the config unfreezes trainable."""
    _add_lora(model, opts)
    model.set_trainable()


def _add_lora(model, opts: TrainOptions) -> None:
    if model.has_lora():
        return
    if model.config.lora_merged:
        raise DistilViTError("the base model's LoRA adapters were merged into the LM (--merge-lora); train a stage-1 "
                             "model without --merge-lora to instruction-tune it.")
    spec = opts.model
    if not spec.use_lora:
        return
    targets = spec.lora_target_modules or default_target_modules(model.config.text_config)
    add_lora(model.language_model, r=spec.lora_r, alpha=spec.lora_alpha, dropout=spec.lora_dropout,
             target_modules=targets)
    model.config.update({"use_lora": True, "lora_r": spec.lora_r, "lora_alpha": spec.lora_alpha,
                         "lora_dropout": spec.lora_dropout, "lora_target_modules": list(targets)})


def run_instruct_training(opts: TrainOptions) -> TrainResult:
    """Stage 2: instruction-tune a stage-1 model on conversations, through the same run as captioning
    (:func:`distilvit.training.run.run_training`: run identity, crash-safe checkpoints, exact resume, atomic
    save). The best checkpoint is chosen by validation loss: conversations have no caption metrics."""
    if not opts.base_model:
        raise DistilViTError("--stage instruct needs --base-model: the folder of a stage-1 model "
                             "(distilvit train --stage pretrain ...).")
    return run_training(replace(opts, metric_for_best_model="loss", eval_captions=0), prepare=prepare_instruct)


def prepare_instruct(opts: TrainOptions, device: str, is_encoder_decoder: bool) -> RunParts:
    """Conversations of the train/validation splits and the stage-1 model, with LoRA and the chat template."""
    if is_encoder_decoder:
        raise DistilViTError("--stage instruct needs a prefix-architecture model (--architecture prefix).")
    data = {split: load_conversations(opts.datasets, split, image_folder=opts.image_folder, seed=opts.seed,
                                      eval_sample=opts.eval_sample,
                                      sample=opts.sample if split == "train" else opts.eval_sample)
            for split in ("train", "validation")}
    model, processor = load_captioner(opts.base_model, revision=opts.base_model_revision)
    if model.config.model_type != "distilvit":
        raise DistilViTError("--stage instruct needs a prefix-architecture model (--architecture prefix).")
    processor = chat_processor(processor)
    ensure_lora(model, opts)
    model.config.ablate_image = opts.blind or model.config.ablate_image
    configure_step(model, opts)
    model.train()
    size = processor_image_size(processor)
    train_set, validation_set = (ConversationDataset(data[s], size) for s in ("train", "validation"))
    logger.info("instruction tuning on %d conversations (%d for validation)", len(train_set), len(validation_set))

    def finish(metrics: dict) -> None:  # images that could not be read were replaced by blank ones: say so
        metrics["unreadable_images"] = len({**train_set.bad_images, **validation_set.bad_images})
        for dataset in (train_set, validation_set):
            if dataset.report():
                logger.warning(dataset.report())

    return RunParts(model=model, processor=processor, train_data=train_set, eval_data=validation_set,
                    collator=ConversationCollator(processor), learning_rates=prefix_learning_rates(opts),
                    finish=finish)
