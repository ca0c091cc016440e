"""Run identity: which earlier output (checkpoints, a saved model) belongs to this training run.

Every checkpoint and every final model records a *fingerprint* of the options that define the run (data
sources, split and sample, model spec, optimisation options, eval/save cadence, seed, ...), not of options that
change nothing in the result (paths, workers, logging, device). :func:`plan_run` compares it with what is on
disk before anything is trained:

* ``--save-dir`` already holds this run's model: the run is finished, nothing is trained;
* the last complete checkpoint of this run is resumed; checkpoints of another run are refused with one error
  naming the differing options and the two ways out (``--resume-from``, ``--overwrite-checkpoints``);
* a model of another run in ``--save-dir`` is replaced only with ``--overwrite-save-dir``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from distilvit.errors import DistilViTError
from distilvit.training.checkpoints import (
    TRAINER_STATE,
    is_complete_checkpoint,
    read_run_record,
    recover,
    scan_checkpoints,
)

logger = logging.getLogger("distilvit.training")

# options that do not change what is trained (where things go, how fast, how much is logged)
NOT_DEFINING = {
    "save_dir", "checkpoints_dir", "resume_from", "overwrite_checkpoints", "overwrite_save_dir",
    "eval_batch_size", "save_total_limit", "logging_steps", "device", "cache_dir", "prune_cache", "debug",
    "push_to_hub", "hub_model_id", "num_workers", "feature_cache_dir", "torch_compile",
    "gradient_checkpointing", "attn_implementation", "model.cache_dir",
}
# options that change which weights exist or their shapes: a checkpoint that differs in them cannot be resumed
STRUCTURAL = {
    "base_model", "model.architecture", "model.encoder", "model.decoder", "model.projection_type",
    "model.projection_layernorm", "model.prefix_reduction", "model.use_lora", "model.lora_r",
    "model.lora_target_modules", "model.unfreeze_vision_layers", "model.extra",
}


def _source(name):
    """Local paths by their absolute location (the same folder named from another directory is the same)."""
    if isinstance(name, str) and Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


def run_fingerprint(opts) -> dict:
    """The options that define a training run, as a flat JSON-able dict (``model.*`` for the model spec)."""
    values = asdict(opts)
    spec = values.pop("model")
    values.update({f"model.{key}": value for key, value in spec.items()})
    values["datasets"] = [_source(d) for d in opts.datasets]
    for key in ("base_model", "model.encoder", "model.decoder"):
        values[key] = _source(values.get(key))
    defining = {key: value for key, value in values.items() if key not in NOT_DEFINING}
    return json.loads(json.dumps(defining, default=str))


def run_record(opts) -> dict:
    return {"fingerprint": run_fingerprint(opts)}


def differences(recorded: dict | None, current: dict) -> list[str]:
    recorded = recorded or {}
    return sorted(key for key in set(recorded) | set(current) if recorded.get(key, "(unset)") != current.get(key, "(unset)"))


def describe(recorded: dict | None, current: dict, keys: list[str]) -> str:
    recorded = recorded or {}
    return "; ".join(f"{key}: {recorded.get(key, '(unset)')!r} there, {current.get(key, '(unset)')!r} now" for key in keys)


@dataclass
class RunPlan:
    resume: Path | None = None  # checkpoint to resume from
    finished: bool = False  # --save-dir already holds this run's final model
    checkpoint_finished: bool = False  # the resumed checkpoint is the end of training: save it, train nothing


def _fingerprint_of(folder: Path) -> dict | None:
    record = read_run_record(folder)
    return record.get("fingerprint") if isinstance(record, dict) else None


def training_stopped(checkpoint: Path, opts) -> bool:
    """True when the checkpoint's trainer state is the end of training (max steps, epochs or early stopping)."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    max_steps = opts.max_steps if opts.max_steps > 0 else state.get("max_steps", 0)
    return bool(control.get("should_training_stop")) or (max_steps > 0 and state.get("global_step", 0) >= max_steps)


def _check_resume_from(path: Path, fingerprint: dict) -> bool:
    """Validate ``--resume-from``; True when it is this very run (not just an accepted different one)."""
    if not path.is_dir() or not is_complete_checkpoint(path, need_run_record=False):
        raise DistilViTError(f"--resume-from {path} is not a complete checkpoint (it needs model.safetensors and "
                             f"{TRAINER_STATE}). Give a checkpoint-N folder written by distilvit train.")
    recorded = _fingerprint_of(path)
    if recorded is None:
        logger.warning("%s has no run record; resuming from it without checking that it belongs to this run", path)
        return False
    diff = differences(recorded, fingerprint)
    blocking = [key for key in diff if key in STRUCTURAL]
    if blocking:
        raise DistilViTError(
            f"cannot resume from {path}: its model differs from this run's ({describe(recorded, fingerprint, blocking)}), "
            "so its weights do not fit. Start afresh with --overwrite-checkpoints or another --checkpoints-dir.")
    if diff:
        logger.warning("resuming from %s as asked (--resume-from), although this run differs in: %s",
                       path, describe(recorded, fingerprint, diff))
    return not diff


def plan_run(opts, fingerprint: dict) -> RunPlan:
    """Decide, before training, what to do with earlier output; refuse (one error) what belongs to another run."""
    save_dir, checkpoints_dir = Path(opts.save_dir), Path(opts.checkpoints_dir)
    recover(save_dir)
    problems = []
    if save_dir.exists():
        saved = _fingerprint_of(save_dir) if save_dir.is_dir() else None
        if saved == fingerprint and (save_dir / "config.json").is_file():
            return RunPlan(finished=True)
        if not opts.overwrite_save_dir and (not save_dir.is_dir() or any(save_dir.iterdir())):
            why = (f"it differs in: {describe(saved, fingerprint, differences(saved, fingerprint))}" if saved
                   else "it was not written by distilvit train")
            problems.append(f"--save-dir {save_dir} already holds another run's model ({why}). Add --overwrite-save-dir "
                            "to replace it when this run ends, or choose another --save-dir.")
    checkpoints = scan_checkpoints(checkpoints_dir)
    mine = [c for c in checkpoints if _fingerprint_of(c) == fingerprint]
    others = [c for c in checkpoints if c not in mine]
    plan = RunPlan()
    if opts.resume_from:
        plan.resume = Path(opts.resume_from)
        same_run = _check_resume_from(plan.resume, fingerprint)
        plan.checkpoint_finished = same_run and training_stopped(plan.resume, opts)
    elif others and not mine and not opts.overwrite_checkpoints:
        latest = others[-1]
        recorded = _fingerprint_of(latest)
        problems.append(
            f"--checkpoints-dir {checkpoints_dir} holds checkpoints of another run ({latest.name} differs in: "
            f"{describe(recorded, fingerprint, differences(recorded, fingerprint))}). To continue from it anyway, "
            f"accepting the difference, add --resume-from {latest}; to discard those checkpoints and start afresh, "
            "add --overwrite-checkpoints (or choose another --checkpoints-dir).")
    else:
        if opts.overwrite_checkpoints:
            for old in others:
                logger.warning("--overwrite-checkpoints: deleting %s (another run's checkpoint)", old)
                shutil.rmtree(old, ignore_errors=True)
        if mine:
            plan.resume = mine[-1]
            plan.checkpoint_finished = training_stopped(plan.resume, opts)
    if problems:
        raise DistilViTError("this run would reuse another run's output:\n  " + "\n  ".join(problems))
    return plan


def check_weights_fit(model, checkpoint: Path) -> None:
    """A clear error (not a load-time crash) when a checkpoint's weights do not fit the model being trained."""
    from safetensors import safe_open

    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        return  # sharded weights: Trainer's own loader reports problems
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    mismatched, unexpected = [], []
    with safe_open(str(path), framework="pt") as weights:
        stored = set(weights.keys())
        for name in sorted(stored):
            if name not in expected:
                unexpected.append(name)
            elif tuple(weights.get_slice(name).get_shape()) != expected[name]:
                mismatched.append(f"{name} {tuple(weights.get_slice(name).get_shape())} there, {expected[name]} now")
        tied = set(getattr(model, "all_tied_weights_keys", None) or {})  # stored once, under the other name
        missing = [name for name in expected if name not in stored and name not in tied]
    if mismatched or unexpected or missing:
        detail = "; ".join(mismatched[:3] + [f"{name} is not in this model" for name in unexpected[:3]]
                           + [f"{name} is missing there" for name in missing[:3]])
        raise DistilViTError(f"the weights in {checkpoint} do not fit the model of this run ({detail}). It was trained "
                             "with other model options (LoRA, projection, encoder or LM); start afresh with "
                             "--overwrite-checkpoints or another --checkpoints-dir.")
