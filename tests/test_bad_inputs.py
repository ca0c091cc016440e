"""Bad model files and bad options: one clear ``error:`` line and exit code 2 from the real CLI, never an
internal error or a traceback; pickles are refused and never unpickled (issue 11, points 6 and 7)."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from serving_helpers import free_port

from distilvit.cli.main import main
from distilvit.errors import ModelError
from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.model.captioning import generate_captions
from distilvit.model.files import check_model_folder



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder, tiny_lm):
    torch.manual_seed(0)
    model, processor = build_captioner(CaptionerSpec(encoder=str(tiny_encoder), decoder=str(tiny_lm)))
    path = tmp_path_factory.mktemp("good-model")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    return path


class Marker:
    """A pickle that would create ``path`` when unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _truncate(folder: Path, tiny_lm: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _to_pickle(folder: Path, tiny_lm: Path) -> None:
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


def _bad_shard_index(folder: Path, tiny_lm: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}')


CORRUPTIONS = {
    # name: (how to damage a copy of a good model folder, words the error must contain)
    "truncated weights": (_truncate, "not a readable safetensors file"),
    "0-byte weights": (lambda f, _: (f / "model.safetensors").write_bytes(b""), "is empty (0 bytes)"),
    "garbage weights header": (lambda f, _: (f / "model.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{garbage garbage"),
                               "not a readable safetensors file"),
    "empty config.json": (lambda f, _: (f / "config.json").write_text(""), "config.json is empty"),
    "invalid config.json": (lambda f, _: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    "config.json without model_type": (lambda f, _: (f / "config.json").write_text("[]"), "no \"model_type\""),
    "no weights": (lambda f, _: (f / "model.safetensors").unlink(), "has no weights"),
    "pickle-only weights": (_to_pickle, "only as pickle files (pytorch_model.bin)"),
    "missing shard": (_bad_shard_index, "model-00001-of-00002.safetensors is missing"),
    "weights of another model": (lambda f, lm: shutil.copy(lm / "model.safetensors", f / "model.safetensors"),
                                 "do not match its config.json"),
}


@pytest.fixture
def damaged(model_dir, tiny_lm, tmp_path):
    """Factory: ``damaged(name)`` -> a copy of the good model folder damaged as ``CORRUPTIONS[name]`` says."""

    def make(name: str) -> Path:
        folder = tmp_path / re.sub(r"\W+", "-", name)
        shutil.copytree(model_dir, folder)
        CORRUPTIONS[name][0](folder, tiny_lm)
        return folder

    return make


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``(exit code, stderr)`` of the real CLI, in-process; argparse's own errors exit through SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert message in err.strip().splitlines()[-1], err


COMMANDS = {
    # command: argv for a model folder M (an image I; T a scratch folder); each must fail before heavy work
    "caption": lambda m, i, t: ["caption", m, i],
    "eval": lambda m, i, t: ["eval", m, "--sample", "2", "--no-meteor", "--out", t / "report"],
    "export": lambda m, i, t: ["export", m, "--out", t / "bundle"],
    "serve": lambda m, i, t: ["serve", m, "--port", free_port()],
    "gradio": lambda m, i, t: ["gradio", m, "--port", free_port()],
    "train --base-model": lambda m, i, t: ["train", "--base-model", m, "--max-steps", "1", "--sample", "8",
                                           "--checkpoints-dir", t / "ckpt", "--save-dir", t / "saved"],
}


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if serve or gradio ever gets as far as listening."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("the server started although the model folder is bad")

    monkeypatch.setattr(uvicorn, "run", refuse)
    import distilvit.serving.gradio_app as gradio_app

    monkeypatch.setattr(gradio_app, "launch", refuse)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_model_folder_gives_one_clear_error(command, corruption, damaged, image_file, tmp_path, capsys,
                                                    no_server):
    folder = damaged(corruption)
    code, err = run_cli(COMMANDS[command](folder, image_file, tmp_path), capsys)
    assert_clear_error(code, err, CORRUPTIONS[corruption][1])
    assert not (tmp_path / "report").exists() and not (tmp_path / "bundle").exists()
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize("what", ["--encoder-model", "--decoder-model"])
@pytest.mark.parametrize("corruption", ["truncated weights", "empty config.json", "pickle-only weights"])
def test_damaged_encoder_or_decoder_folder_gives_one_clear_error(what, corruption, tiny_encoder, tiny_lm, tmp_path,
                                                                 capsys):
    source = tiny_encoder if what == "--encoder-model" else tiny_lm
    folder = tmp_path / "part"
    shutil.copytree(source, folder)
    CORRUPTIONS[corruption][0](folder, tiny_lm)
    parts = {"--encoder-model": tiny_encoder, "--decoder-model": tiny_lm, what: folder}
    code, err = run_cli(["train", "--encoder-model", parts["--encoder-model"], "--decoder-model", parts["--decoder-model"],
                         "--max-steps", "1", "--sample", "8", "--checkpoints-dir", tmp_path / "c",
                         "--save-dir", tmp_path / "s"], capsys)
    assert_clear_error(code, err, CORRUPTIONS[corruption][1])
    assert not (tmp_path / "s").exists()


def _out_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


OPTION_CASES = [
    # (argv with M = good model folder, I = image, E = tiny encoder, L = tiny LM, F = an existing file; message)
    (["caption", "M", "I", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["caption", "M", "I", "--do-sample", "--top-p", "2"], "--top-p must be in (0, 1]"),
    (["caption", "M", "I", "--do-sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["caption", "M", "I", "--do-sample", "--top-k", "0"], "--top-k must be >= 1"),
    (["caption", "M", "I", "--repetition-penalty", "0"], "--repetition-penalty must be greater than 0"),
    (["caption", "M", "I", "--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size must be >= 0"),
    (["eval", "M", "--out", "F", "--sample", "2", "--no-meteor"], "is a file; give a new or existing folder"),
    (["eval", "M", "--out", "F/report", "--sample", "2", "--no-meteor"], "F is a file"),
    (["eval", "M", "--do-sample", "--top-p", "2", "--sample", "2"], "--top-p must be in (0, 1]"),
    (["serve", "M", "--batch-wait-ms", "-1"], "--batch-wait-ms must be 0 or more"),
    (["train", "--warmup-steps", "-3"], "--warmup-steps must be >= 0, got -3"),
    (["train", "--encoder-model", "E", "--vision-feature-layer", "99"],
     "--vision-feature-layer 99 is out of range for this siglip_vision_model encoder, which has 3 hidden states: "
     "use -1 (its final output) or an index from -3 to 2"),
    (["train", "--encoder-model", "E", "--vision-feature-layer", "-4"], "an index from -3 to 2"),
    (["train", "--no-lora", "--lora-r", "8"], "--no-lora trains no LoRA adapters, so --lora-r cannot be used"),
    (["train", "--no-lora", "--lora-r", "16"], "--lora-r cannot be used"),  # the default value, given explicitly
    (["train", "--no-lora", "--lora-alpha", "32", "--merge-lora"], "--lora-alpha, --merge-lora cannot be used"),
    (["train", "--no-lora", "--lora-target-modules", "q_proj"], "--lora-target-modules cannot be used"),
    (["train", "--no-lora", "--lora-lr", "1e-3"], "--lora-lr cannot be used"),
    (["train", "--lora-dropout", "-0.1"], "--lora-dropout must be in [0, 1)"),
    (["train", "--lora-dropout", "1"], "--lora-dropout must be in [0, 1)"),
    (["train", "--max-steps", "0"], "--max-steps must be a positive number of steps"),
    (["train", "--max-steps", "-5"], "--max-steps must be a positive number of steps"),
    (["train", "--num-train-epochs", "0"], "--num-train-epochs must be greater than 0"),
    (["train", "--projection-lr", "-0.0001"], "--projection-lr must be greater than 0"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
    (["train", "--eval-captions", "-1"], "--eval-captions must be >= 0"),
    (["train", "--num-workers", "-1"], "--num-workers must be >= 0"),
    (["train", "--unfreeze-vision-layers", "-2"], "--unfreeze-vision-layers must be >= -1"),
    (["train", "--save-dir", "F"], "is a file; give a new or existing folder"),
    (["train", "--checkpoints-dir", "F/sub"], "F is a file"),
]


@pytest.mark.parametrize("argv,message", OPTION_CASES, ids=[" ".join(a) for a, _ in OPTION_CASES])
def test_bad_option_gives_one_clear_error_before_any_work(argv, message, model_dir, image_file, tiny_encoder, tiny_lm,
                                                          tmp_path, capsys, monkeypatch, no_server):
    import distilvit.evaluation.run as evaluation
    import distilvit.model.captioning as captioning
    import distilvit.training.run as training

    def never(*args, **kwargs):
        raise AssertionError("heavy work started before the bad option was rejected")

    for module, name in ((evaluation, "evaluate_model"), (captioning, "generate_captions"), (training, "run_training")):
        monkeypatch.setattr(module, name, never)
    file = _out_file(tmp_path)
    names = {"M": model_dir, "I": image_file, "E": tiny_encoder, "L": tiny_lm, "F": file}
    argv = [names.get(a, a) for a in argv]
    argv = [str(a).replace("F/", f"{file}/") for a in argv]
    if argv[0] == "train":
        argv += ["--sample", "8", "--max-steps", "1"] if "--max-steps" not in argv else ["--sample", "8"]
        argv += [] if "--encoder-model" in argv else ["--encoder-model", "scratch:siglip-tiny"]
        argv += ["--decoder-model", str(tiny_lm)]
        argv += [] if "--save-dir" in argv else ["--save-dir", str(tmp_path / "saved")]
        argv += [] if "--checkpoints-dir" in argv else ["--checkpoints-dir", str(tmp_path / "ckpt")]
    code, err = run_cli(argv, capsys)
    assert_clear_error(code, err, message.replace("F", str(file)) if message.startswith("F ") else message)


def test_valid_lora_options_and_feature_layer_still_train_options(tiny_encoder, tiny_lm, tmp_path):
    """The checks accept what is valid: LoRA options without --no-lora, an in-range layer, --no-lora alone."""
    from distilvit.cli.main import build_parser
    from distilvit.cli.train import options_from_args

    common = ["train", "--encoder-model", str(tiny_encoder), "--decoder-model", str(tiny_lm),
              "--save-dir", str(tmp_path / "s"), "--checkpoints-dir", str(tmp_path / "c")]
    opts = options_from_args(build_parser().parse_args(common + ["--lora-r", "4", "--merge-lora",
                                                                 "--vision-feature-layer", "-3", "--warmup-steps", "0"]))
    assert (opts.model.lora_r, opts.merge_lora, opts.model.vision_feature_layer) == (4, True, -3)
    opts = options_from_args(build_parser().parse_args(common + ["--no-lora"]))
    assert not opts.model.use_lora and opts.model.lora_r == 16 and not opts.merge_lora


# ---------------------------------------------------------------- pickles are never unpickled
@pytest.mark.parametrize("command", ["caption", "serve", "gradio", "export", "train --base-model", "eval"])
def test_malicious_pickle_is_refused_and_never_unpickled(command, model_dir, image_file, tmp_path, capsys, no_server):
    folder = tmp_path / "evil-model"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(marker)))
    assert not marker.exists()
    code, err = run_cli(COMMANDS[command](folder, image_file, tmp_path), capsys)
    assert_clear_error(code, err, "only as pickle files (pytorch_model.bin)")
    assert "save_pretrained" in err and "weights_only" not in err
    assert not marker.exists()


def test_malicious_pickle_as_decoder_is_never_unpickled(tiny_lm, tmp_path, capsys):
    folder = tmp_path / "evil-lm"
    shutil.copytree(tiny_lm, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(marker)))
    code, err = run_cli(["train", "--encoder-model", "scratch:siglip-tiny", "--decoder-model", folder, "--max-steps", "1",
                         "--sample", "8", "--checkpoints-dir", tmp_path / "c", "--save-dir", tmp_path / "s"], capsys)
    assert_clear_error(code, err, "AutoModelForCausalLM.from_pretrained")
    assert not marker.exists()


def test_pickles_beside_safetensors_weights_are_ignored(model_dir, tmp_path):
    """A checkpoint folder holds the Trainer's pickles (optimizer.pt, ...) beside model.safetensors: the model loads
    from the safetensors file and none of the pickles is opened."""
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(model_dir, folder)
    marker = tmp_path / "PWNED"
    for name in ("pytorch_model.bin", "optimizer.pt", "training_args.bin", "rng_state.pth"):
        (folder / name).write_bytes(pickle.dumps(Marker(marker)))
    model, _ = load_captioner(folder)
    reference, _ = load_captioner(model_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert not marker.exists()


def test_conversion_hint_in_the_refusal_works(model_dir, image_file, tmp_path):
    """The one-liner the refusal prints converts a (trusted) pickle-only folder into one that loads, same captions."""
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    _to_pickle(folder, model_dir)
    with pytest.raises(ModelError) as refusal:
        check_model_folder(folder)
    code = re.search(r'python -c "(.+?)"', str(refusal.value)).group(1)
    exec(code, {})  # noqa: S102 - the command the message tells the user to run
    assert (folder / "model.safetensors").is_file()
    images = [Image.open(image_file).convert("RGB")]
    converted = generate_captions(*load_captioner(folder), images, max_new_tokens=4)
    assert converted == generate_captions(*load_captioner(model_dir), images, max_new_tokens=4)


def test_hub_repository_without_safetensors_is_refused_with_the_hint():
    """A Hub id whose repository has only pickle weights: transformers' use_safetensors error becomes the refusal."""
    from distilvit.model.parts import hub_call

    def pickle_only_repo(name, **kwargs):
        raise OSError(f"{name} does not appear to have a file named model.safetensors or model.safetensors.index.json "
                      "and thus cannot be loaded with `safetensors`. Please do not set `use_safetensors=True`.")

    with pytest.raises(ModelError) as refusal:
        hub_call(pickle_only_repo, "someone/old-gpt", "decoder")
    message = str(refusal.value)
    assert "only as pickle files" in message and "AutoModelForCausalLM" in message
    assert "do not set `use_safetensors=True`" not in message


def test_damaged_gguf_conversion_cache_is_converted_again(tiny_lm, tmp_path, monkeypatch):
    """A cached GGUF conversion whose model.safetensors was truncated later is converted again, not loaded."""
    import transformers

    from distilvit.model import gguf

    source = tmp_path / "tiny.gguf"
    source.write_bytes(b"GGUF stand-in")  # the reader is replaced below: no real GGUF parsing here
    converted = []

    def read_gguf(auto_class):
        original = auto_class.from_pretrained

        def from_pretrained(folder, gguf_file=None, **kwargs):
            assert gguf_file == source.name
            converted.append(auto_class.__name__)
            return original(tiny_lm)
        return from_pretrained

    for auto_class in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(auto_class, "from_pretrained", read_gguf(auto_class), raising=True)
    target = gguf.convert_gguf(str(source), tmp_path / "cache")
    assert converted == ["AutoModelForCausalLM", "AutoTokenizer"]
    assert gguf.convert_gguf(str(source), tmp_path / "cache") == target and len(converted) == 2  # cached
    _truncate(target, tiny_lm)
    assert gguf.convert_gguf(str(source), tmp_path / "cache") == target and len(converted) == 4  # converted again
    check_model_folder(target)
