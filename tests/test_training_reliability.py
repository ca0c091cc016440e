"""Training reliability without kills: run identity (another run's checkpoints or model are refused, a finished
run trains nothing), incomplete checkpoints are ignored, incompatible checkpoints give a clear error, atomic
folder replacement, and a data order that depends on (seed, epoch) only."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch
from training_helpers import assert_same_model, make_captions_file, train_argv

from distilvit.cli.main import main
from distilvit.model import load_captioner
from distilvit.training.checkpoints import RUN_FILE, publish, recover, staged_folder, staging_path
from distilvit.training.collator import CaptionCollator
from distilvit.training.run import TrainOptions, checkpoints_dir
from distilvit.training.sampling import EpochSampler


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only cost time on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_dirs):
    """A finished 4-step run: <tmp>/model and <tmp>/model-checkpoints (the default checkpoints folder)."""
    folder = tmp_path_factory.mktemp("first-run")
    lm, data = tiny_dirs("llama"), make_captions_file(folder / "data")
    assert main(train_argv(folder / "model", lm, data, max_steps=4)) == 0
    return folder, lm, data


def snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


def copy_run(first_run, tmp_path):
    """A copy of the first run's output; returns the save dir, the checkpoints dir and the ``train_argv`` of it."""
    folder, lm, data = first_run
    for name in ("model", "model-checkpoints"):
        shutil.copytree(folder / name, tmp_path / name)
    return tmp_path / "model", tmp_path / "model-checkpoints", lambda save_dir, *extra, **kw: train_argv(
        save_dir, lm, data, *extra, **kw)


def test_checkpoints_default_next_to_the_save_dir(first_run):
    folder = first_run[0]
    assert sorted(p.name for p in (folder / "model-checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert checkpoints_dir(TrainOptions(save_dir="out/m")) == "out/m-checkpoints"
    assert checkpoints_dir(TrainOptions(save_dir="m", checkpoints_dir="c")) == "c"


def test_saved_files_get_normal_permissions(first_run):
    folder = first_run[0]
    umask = os.umask(0o022)
    os.umask(umask)
    for sub in ("model", "model-checkpoints/checkpoint-4"):
        for path in (folder / sub).iterdir():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
        assert (folder / sub).stat().st_mode & 0o777 == 0o777 & ~umask


def test_finished_run_trains_nothing(first_run, tmp_path, caplog, capsys):
    save_dir, ckpt, argv_for = copy_run(first_run, tmp_path)
    before = snapshot(tmp_path)
    with caplog.at_level(logging.INFO, logger="distilvit.training"):
        assert main(argv_for(save_dir, max_steps=4)) == 0
    assert "already finished" in caplog.text
    assert snapshot(tmp_path) == before  # no step past --max-steps, no checkpoint rotated out, model untouched
    out = capsys.readouterr().out
    assert '"eval_loss"' in out and "already finished: nothing trained" in out  # its metrics are reported


def test_killed_during_final_save_saves_without_training(first_run, tmp_path, caplog):
    save_dir, ckpt, argv_for = copy_run(first_run, tmp_path)
    shutil.rmtree(save_dir)  # as if killed before the final model was in place
    before = snapshot(ckpt)
    with caplog.at_level(logging.INFO, logger="distilvit.training"):
        assert main(argv_for(save_dir, max_steps=4)) == 0
    assert "training nothing" in caplog.text
    assert snapshot(ckpt) == before
    assert_same_model(first_run[0] / "model", save_dir, tolerance=0.0)


def test_another_run_is_refused_naming_the_differences(first_run, tmp_path, capsys):
    save_dir, ckpt, argv_for = copy_run(first_run, tmp_path)
    before = snapshot(tmp_path)
    code = main(argv_for(save_dir, "--prompt", "a picture of", max_steps=6))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ")
    assert "max_steps: 4 there, 6 now" in err and "model.prompt: '' there, 'a picture of' now" in err
    assert f"--resume-from {ckpt / 'checkpoint-4'}" in err and "--overwrite-checkpoints" in err
    assert "--overwrite-save-dir" in err
    assert snapshot(tmp_path) == before  # nothing touched
    code = main(argv_for(save_dir, "--prompt", "a picture of", "--overwrite-checkpoints", "--overwrite-save-dir",
                           max_steps=2))
    assert code == 0
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2"]  # the other run's checkpoints are gone
    assert load_captioner(save_dir)[0].config.prompt == "a picture of"


@pytest.mark.parametrize("option", [["--no-lora"], ["--projection-type", "mlp"]])
def test_incompatible_checkpoint_is_a_clear_error_even_with_resume_from(first_run, tmp_path, capsys, option):
    save_dir, ckpt, argv_for = copy_run(first_run, tmp_path)
    argv = argv_for(tmp_path / "other", *option, "--checkpoints-dir", str(ckpt), max_steps=4)
    assert main(argv) == 2
    assert "--checkpoints-dir" in capsys.readouterr().err
    assert main(argv + ["--resume-from", str(ckpt / "checkpoint-2")]) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "model." in err and "internal error" not in err
    (ckpt / "checkpoint-2" / RUN_FILE).unlink()  # no run record (an older distilvit): the weights are checked
    assert main(argv + ["--resume-from", str(ckpt / "checkpoint-2")]) == 2
    err = capsys.readouterr().err
    assert "do not fit the model" in err and "internal error" not in err


def test_incomplete_checkpoints_are_ignored_with_a_warning(first_run, tmp_path, caplog):
    save_dir, ckpt, argv_for = copy_run(first_run, tmp_path)
    shutil.rmtree(save_dir)
    shutil.rmtree(ckpt / "checkpoint-4")
    (ckpt / "checkpoint-4").mkdir()  # empty
    (ckpt / "checkpoint-6").mkdir()
    (ckpt / "checkpoint-6" / "config.json").write_text('{"model_ty')  # truncated
    shutil.copytree(ckpt / "checkpoint-2", ckpt / "checkpoint-8")
    (ckpt / "checkpoint-8" / "trainer_state.json").unlink()  # weights without trainer state
    leftover = staging_path(ckpt / "checkpoint-10")
    leftover.mkdir()
    with caplog.at_level(logging.INFO, logger="distilvit.training"):
        assert main(argv_for(save_dir, max_steps=4)) == 0
    assert f"resuming from {ckpt / 'checkpoint-2'}" in caplog.text
    warning = next(r.getMessage() for r in caplog.records if "ignoring incomplete" in r.getMessage())
    assert all(str(ckpt / f"checkpoint-{n}") in warning for n in (4, 6, 8))
    assert str(leftover) in caplog.text and not leftover.exists()
    assert_same_model(first_run[0] / "model", save_dir)  # resumed from checkpoint-2, ends where the first run did


def test_staged_folder_replaces_only_when_complete(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(dest) as staging:
            (staging / "config.json").write_text("half")
            raise RuntimeError("killed")
    assert (dest / "config.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model"]
    with staged_folder(dest) as staging:
        (staging / "config.json").write_text("new")
    assert (dest / "config.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_recover_puts_back_a_parked_folder_and_removes_leftovers(tmp_path):
    dest = tmp_path / "model"
    parked = staging_path(dest, "old")
    parked.mkdir()
    (parked / "config.json").write_text("old")
    staging_path(dest).mkdir()  # the replacement that never arrived
    recover(dest)
    assert (dest / "config.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model"]
    staged = staging_path(dest)
    staged.mkdir()
    (staged / "config.json").write_text("new")
    publish(staged, dest)
    assert (dest / "config.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_data_order_and_caption_choice_depend_on_seed_and_epoch_only():
    lengths = [3, 9, 4, 7, 5, 8, 2, 6] * 4
    heard = []
    sampler = EpochSampler(len(lengths), seed=1, batch_size=4, lengths=lengths, on_epoch=heard.append)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    torch.manual_seed(123)  # the global RNG (restored late on resume) plays no part
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert heard == [1] and list(sampler) != first
    assert list(EpochSampler(len(lengths), seed=2, batch_size=4, lengths=lengths)) != first
    assert sorted(EpochSampler(10, seed=1, batch_size=4)) == list(range(10))
    collator = CaptionCollator(processor=None, seed=1)
    captions = [f"caption {i}" for i in range(5)]
    picks = [collator.pick(captions) for _ in range(3)]
    assert len(set(picks)) == 1  # no hidden RNG stream: the same row gets the same caption within an epoch
    per_epoch = []
    for epoch in range(8):
        collator.set_epoch(epoch)
        per_epoch.append(collator.pick(captions))
    assert len(set(per_epoch)) > 1  # other epochs pick other captions
    assert CaptionCollator(processor=None, train=False).pick(captions) == "caption 0"


def test_epoch_sampler_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        EpochSampler(3, seed=0, batch_size=2, lengths=[1, 2])


def test_resume_from_a_missing_folder_is_a_clear_error(tmp_path, tiny_dirs, capsys):
    argv = train_argv(tmp_path / "m", tiny_dirs("llama"), tmp_path / "nope.json", "--resume-from", str(tmp_path / "nope"),
                      max_steps=2)
    assert main(argv) == 2
    assert "is not a complete checkpoint" in capsys.readouterr().err
