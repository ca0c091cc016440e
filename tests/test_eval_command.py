"""`distilvit eval` end to end on a tiny model: `--split all` on a 40-image COCO captions file, the row counts
and the scoring facts (tokenizer, METEOR) in metrics.json and the reports, and where the report goes
(default folder, refusing another evaluation's report unless --overwrite)."""

from __future__ import annotations

import json
import shutil

import pytest
from serving_helpers import make_model_dir
from test_data_split_all import coco_captions_file

import distilvit.evaluation.run as run_mod
from distilvit.cli.main import main
from distilvit.evaluation.outdir import check_out_dir, default_out_dir
from distilvit.errors import DistilViTError

QUICK = ["--no-meteor", "--max-new-tokens", "3", "--batch-size", "20"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_encoder, tiny_lm):
    return make_model_dir(tmp_path_factory.mktemp("eval-model") / "my-captioner", tiny_encoder, tiny_lm)


@pytest.fixture(scope="module")
def coco40(tmp_path_factory):
    from conftest import encode_image

    return coco_captions_file(tmp_path_factory.mktemp("coco40"), lambda colour, fmt: encode_image(colour, fmt))


def _info(out):
    return json.loads((out / "metrics.json").read_text())["info"]


def test_split_all_scores_every_row_and_says_so(model, coco40, tmp_path, caplog):
    out = tmp_path / "all"
    caplog.set_level("INFO", logger="distilvit.evaluation")
    assert main(["eval", str(model), "--dataset", str(coco40), "--split", "all", "--out", str(out),
                 "--format", "both", *QUICK]) == 0
    info = _info(out)
    assert (info["rows_evaluated"], info["rows_in_split"], info["rows_total"]) == (40, 40, 40)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 40
    assert "rows_evaluated</td><td>40</td>" in (out / "report.html").read_text()
    assert "| rows\\_total | 40 |" in (out / "report.md").read_text()
    assert any("evaluating 40 of 40 rows" in r.getMessage() for r in caplog.records)


def test_a_seeded_split_scores_part_of_the_file(model, coco40, tmp_path):
    out = tmp_path / "train"
    assert main(["eval", str(model), "--dataset", str(coco40), "--split", "train", "--out", str(out), *QUICK]) == 0
    info = _info(out)
    assert info["rows_total"] == 40 and info["rows_evaluated"] == info["rows_in_split"] < 40


def test_scoring_facts_are_recorded(model, coco40, tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd, *a, **k))
    out = tmp_path / "no-java"
    with pytest.warns(RuntimeWarning, match="Java was not found"):
        assert main(["eval", str(model), "--dataset", str(coco40), "--split", "all", "--sample", "5",
                     "--max-new-tokens", "3", "--out", str(out), "--format", "md"]) == 0
    info = _info(out)
    assert (info["tokenizer"], info["meteor"]) == ("python-fallback", "skipped: Java not found")
    assert "| tokenizer | python-fallback |" in (out / "report.md").read_text()


def test_default_out_is_named_after_the_model_and_reruns_replace_it(model, coco40, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["eval", str(model), "--dataset", str(coco40), "--split", "all", "--sample", "3", *QUICK]
    assert main(argv) == 0
    out = tmp_path / "eval-my-captioner"
    assert _info(out)["rows_evaluated"] == 3
    (out / "images" / "stale.png").write_bytes(b"old")
    assert main(argv) == 0  # the same evaluation again: replaced, nothing of the old one left
    assert not (out / "images" / "stale.png").exists() and _info(out)["rows_evaluated"] == 3


def test_another_evaluations_report_is_refused_before_any_work(model, coco40, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    assert main(["eval", str(model), "--dataset", str(coco40), "--split", "all", "--sample", "3",
                 "--out", str(out), *QUICK]) == 0
    before = (out / "metrics.json").read_text()

    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the output folder was checked")

    monkeypatch.setattr(run_mod, "load_caption_rows", no_loading)
    capsys.readouterr()
    assert main(["eval", str(model), "--dataset", str(coco40), "--split", "train", "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "holds the report of another evaluation" in err and "split: 'all' there, 'train' now" in err
    assert "--overwrite" in err and (out / "metrics.json").read_text() == before
    monkeypatch.undo()
    assert main(["eval", str(model), "--dataset", str(coco40), "--split", "all", "--sample", "4",
                 "--out", str(out), "--overwrite", *QUICK]) == 0
    assert _info(out)["rows_evaluated"] == 4


def test_a_folder_that_is_not_a_report_is_never_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DistilViTError, match="not an evaluation report"):
        check_out_dir(tmp_path, {"model": "m"}, overwrite=True)
    assert check_out_dir(tmp_path / "new", {"model": "m"}, overwrite=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_out_dir(tmp_path / "empty", {"model": "m"}, overwrite=False) == tmp_path / "empty"


@pytest.mark.parametrize("model_path,expected", [("runs/my-captioner/", "eval-my-captioner"),
                                                  ("user/hub-model", "eval-hub-model"), ("ckpt/checkpoint-20", "eval-checkpoint-20")])
def test_default_out_dir(model_path, expected):
    assert str(default_out_dir(model_path)) == expected
