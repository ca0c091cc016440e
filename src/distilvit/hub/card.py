"""The model card (``README.md``) pushed with a trained model: what it is, its metrics, how it was trained."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from distilvit import __version__
from distilvit.hub.resolve import is_hub_id


def command_line(argv: list[str] | None = None) -> str | None:
    """The ``distilvit ...`` command this process runs, or ``None`` when it was not started as the CLI."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name not in {"distilvit", "main.py", "__main__.py"}:
        return None
    return shlex.join(["distilvit", *argv[1:]])


def model_card(repo_id: str, *, metrics: dict, options: dict, argv: list[str] | None = None) -> str:
    """Markdown with YAML metadata: architecture, validation metrics, the training command and options."""
    from huggingface_hub import ModelCardData

    spec = options.get("model") or {}
    base = options.get("base_model")
    parts = [base] if base else [spec.get("encoder"), spec.get("decoder")]
    hub_parts = [p for p in parts if isinstance(p, str) and is_hub_id(p)]
    data = ModelCardData(library_name="transformers", pipeline_tag="image-to-text",
                         tags=["distilvit", "image-captioning", "image-to-text"], base_model=hub_parts or None)
    command = command_line(argv)
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {repo_id}", "",
        "An image captioner trained with distilvit "
        f"{__version__}: " + _architecture(spec, base), "",
        "## Use", "",
        "```bash",
        f"distilvit caption {repo_id} photo.jpg            # add --revision REV for a given commit, tag or branch",
        f"distilvit serve {repo_id}                        # HTTP API; also eval, export, gradio",
        "```", "",
        "## Evaluation", "",
        "Validation metrics of the final (best) model, computed by `distilvit train` at the end of training:", "",
        *_metrics_table(metrics), "",
        "## Training", "",
        f"Datasets: {', '.join(map(str, options.get('datasets') or [])) or 'unknown'}; seed {options.get('seed')}.", "",
        "Command:", "",
        "```bash", command or "(not started from the command line; every option is in training_log.json)", "```", "",
        "`training_log.json` holds every option, the final metrics and the full log history; "
        "`training_curves.png` plots the losses and metrics.", "",
    ]
    return "\n".join(lines)


def _architecture(spec: dict, base: str | None) -> str:
    if base:
        return f"continued training of `{base}`."
    if spec.get("architecture", "prefix") != "prefix":
        return (f"vision encoder `{spec.get('encoder')}` with cross-attention decoder `{spec.get('decoder')}` "
                "(transformers VisionEncoderDecoderModel).")
    lora = f"LoRA r={spec.get('lora_r')}" if spec.get("use_lora", True) else "no LoRA (LM frozen)"
    return (f"frozen vision encoder `{spec.get('encoder')}` -> {spec.get('projection_type', 'linear')} projection "
            f"-> decoder-only LM `{spec.get('decoder')}` with {lora}.")


def _metrics_table(metrics: dict) -> list[str]:
    rows = [(k.removeprefix("eval_"), v) for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second", "epoch"))]
    if not rows:
        return ["(no metrics were recorded)"]
    return ["| metric | value |", "|---|---|", *(f"| {name} | {value:.4f} |" for name, value in rows)]
