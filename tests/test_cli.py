"""The ``distilvit`` command: every sub-command end to end on tiny models, and its error handling."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from distilvit.cli.main import main


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, tiny_dirs):
    folder = tmp_path_factory.mktemp("cli-run")
    code = main([
        "train", "--dataset", "shapes", "--sample", "16", "--eval-sample", "4", "--eval-captions", "4",
        "--encoder-model", "scratch:siglip-tiny", "--decoder-model", str(tiny_dirs("llama")),
        "--max-steps", "2", "--batch-size", "4", "--eval-steps", "2", "--save-steps", "2", "--warmup-steps", "0",
        "--checkpoints-dir", str(folder / "ckpt"), "--save-dir", str(folder / "model"),
    ])
    assert code == 0
    return folder / "model"


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(path)
    return path


def test_caption_prints_one_caption_per_image(trained_model, image_file, capsys):
    assert main(["caption", str(trained_model), str(image_file), str(image_file), "--json", "--max-new-tokens", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in result] == [str(image_file)] * 2
    assert result[0]["caption"] == result[1]["caption"]  # greedy is deterministic


def test_eval_writes_metrics_and_report(trained_model, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", str(trained_model), "--dataset", "shapes", "--sample", "4", "--no-meteor",
                 "--out", str(out), "--format", "both", "--max-new-tokens", "4"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"bleu_4", "cider", "rouge_l", "exact_match", "scene_accuracy", "colour_accuracy"} <= set(metrics)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--dataset", "nosuchset", "--max-steps", "1"], "nosuchset"),
        (["caption", "MODEL", "/no/such/image.png"], "cannot read image"),
        (["caption", "/no/such/model", "IMAGE"], "does not exist"),
        (["eval", "/no/such/model", "--sample", "2"], "does not exist"),
        (["train", "--encoder-model", "/no/such/encoder", "--max-steps", "1", "--sample", "8"], "does not exist"),
        (["train", "--save-steps", "150", "--eval-steps", "100"], "multiple of --eval-steps"),
        (["caption", "MODEL", "IMAGE", "--temperature", "0.5"], "only apply with --do-sample"),
        (["train", "--decoder-model", "ENCODER", "--encoder-model", "scratch:siglip-tiny", "--sample", "8"],
         "unsupported language model kind"),
        (["train", "--encoder-model", "MODEL", "--decoder-model", "MODEL", "--sample", "8"],
         "unsupported vision encoder kind 'distilvit'"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_code_2(trained_model, image_file, tiny_encoder, argv, message, capsys,
                                                       tmp_path):
    names = {"MODEL": str(trained_model), "IMAGE": str(image_file), "ENCODER": str(tiny_encoder)}
    argv = [names.get(a, a) for a in argv]
    if argv[0] == "train":
        argv += ["--checkpoints-dir", str(tmp_path / "c"), "--save-dir", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line
    assert "Traceback" not in err


def test_corrupt_image_given_to_caption(trained_model, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["caption", str(trained_model), str(broken)]) == 2
    assert "cannot read image" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "caption", "chat", "shapes-encoder"])
def test_help_explains_every_option(command, capsys):
    from distilvit.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    for action in parser._actions:
        assert action.help and len(action.help) > 5, f"{command} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text


def test_no_command_prints_usage(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_export_samples_writes_the_split_images(tmp_path, capsys):
    from distilvit.data import load_caption_dataset
    from distilvit.data.export_samples import main as export_samples

    assert export_samples(["--split", "test", "--count", "2", "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.png"))
    assert [f.name for f in files] == ["shapes-test-000000.png", "shapes-test-000001.png"]
    first = load_caption_dataset(["shapes"], "test")[0]["image"].convert("RGB")
    assert list(Image.open(files[0]).convert("RGB").getdata()) == list(first.getdata())


def test_demo_recipe_is_valid_train_options():
    """`make demo` passes configs/shapes-demo.args to `distilvit train`: every option must exist and parse, and the
    recipe must read the pretrained encoder's layer that `distilvit shapes-encoder` trains by default."""
    import shlex
    from pathlib import Path

    from distilvit.cli.main import build_parser

    recipe = Path(__file__).resolve().parents[1] / "configs" / "shapes-demo.args"
    args = build_parser().parse_args(["train", *shlex.split(recipe.read_text(), comments=True)])
    defaults = build_parser().parse_args(["shapes-encoder", "--out", "x"])
    assert args.encoder_model == "demo-output/encoder"
    assert args.vision_feature_layer == defaults.feature_layer
    assert args.decoder_model == "smollm2-gguf"
