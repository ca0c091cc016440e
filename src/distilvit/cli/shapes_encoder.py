"""``distilvit shapes-encoder``: pretrain a small vision encoder for the built-in ``shapes`` data."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "shapes-encoder",
        help="pretrain a small vision encoder on the built-in shapes data (for `train --encoder-model DIR`)",
        description="Train a scratch: encoder preset to name each shapes scene column's colour, shape and size "
        "(train split only; objects randomly repainted in off-palette colours or redrawn as other shapes so "
        "colour and shape are learnt apart). Writes a Hugging Face encoder folder (weights, config, image "
        "processor), shapes_encoder.json (options, validation accuracy per attribute, losses) and "
        "shapes_encoder_loss.png. Use the folder as `distilvit train --encoder-model OUT` with the same "
        "--vision-feature-layer. See docs/demo.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="folder to write the encoder to (created if missing)")
    parser.add_argument("--encoder", default="scratch:resnet-tiny",
                        help="encoder preset to train (scratch:resnet-tiny|siglip-tiny|siglip-base)")
    parser.add_argument("--feature-layer", type=int, default=-1,
                        help="encoder layer the attribute heads read (use the captioner's --vision-feature-layer); "
                        "its token grid must be square with a width divisible by 3")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--augment-rate", type=float, default=0.5,
                        help="per object: chance of an off-palette colour (colour unlabelled), else the same chance "
                        "of an off-vocabulary shape (shape unlabelled); 0 disables")
    parser.add_argument("--eval-size", type=int, default=200, help="validation scenes scored at the end")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.set_defaults(run=run)


def run(args) -> int:
    from distilvit.training.shapes_encoder import (
        ShapesEncoderArgs,
        pretrain_shapes_encoder,
    )

    summary = pretrain_shapes_encoder(ShapesEncoderArgs(
        out=args.out, encoder=args.encoder, feature_layer=args.feature_layer, steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, augment_rate=args.augment_rate,
        eval_size=args.eval_size, seed=args.seed,
    ))
    accuracy = summary["validation_accuracy"]
    print(f"encoder saved to {args.out} ({summary['train_seconds']} s, final loss {summary['final_loss']})")
    print("validation accuracy (objects of held-out colour-shape pairs in brackets): " + ", ".join(
        f"{name} {accuracy[name]:.1%} [{accuracy['held_out_' + name]:.1%}]" for name in ("colour", "shape", "size")))
    return 0
