"""``kill -9`` during training: mid-step, while a checkpoint is written, while the final model is saved, each at
three different moments. Every case ends, after re-running the same command, with a loadable model equal to an
uninterrupted run's (weights and every logged loss within ``TOLERANCE``).

Training processes are real processes killed with SIGKILL. The uninterrupted reference runs as
``python -m distilvit.cli.main train ...``; the interrupted ones are forked from a small launcher that imported
distilvit once (an interpreter start costs ~7 s of CPU here, the tiny training ~1 s). The moment of each kill is
chosen with ``DISTILVIT_PAUSE_AT`` (training/checkpoints.py ``pause_point``): the process stops at that point,
announces it in a file, and is killed there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import TOLERANCE, assert_same_model, make_captions_file, train_argv, weights

from distilvit.model import CaptionerSpec, build_captioner, load_captioner
from distilvit.training.checkpoints import RUN_FILE, write_run_record

LAUNCHER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
import distilvit.cli.train, distilvit.training.run  # heavy imports once, before any fork
from distilvit.cli.main import main
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            code = main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
ENV.pop("DISTILVIT_PAUSE_AT", None)


class Launcher:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=ENV)
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, argv: list[str], log: Path, pause: str | None = None, timeout: float = 300) -> int:
        """Run ``distilvit <argv>`` in a forked process; with ``pause``, SIGKILL it once it reaches that point."""
        announce = log.with_suffix(".paused")
        env = {"DISTILVIT_PAUSE_AT": pause or "", "DISTILVIT_PAUSE_FILE": str(announce)}
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log), "env": env}) + "\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        if pause:
            deadline = time.monotonic() + timeout
            while not announce.exists():
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:  # ended without reaching the point
                    break
                assert time.monotonic() < deadline, f"{pause} not reached:\n{log.read_text()[-3000:]}"
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                announce.unlink()
        code = int(self.proc.stdout.readline())
        if pause:
            assert code == -signal.SIGKILL, f"expected a kill at {pause}, got exit {code}:\n{log.read_text()[-3000:]}"
        else:
            assert code == 0, log.read_text()[-3000:]
        return code

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def launcher():
    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dirs):
    """The uninterrupted run, through the real command line."""
    folder = tmp_path_factory.mktemp("reference")
    lm, data = tiny_dirs("llama"), make_captions_file(folder / "data")
    done = subprocess.run([sys.executable, "-m", "distilvit.cli.main", *train_argv(folder / "model", lm, data)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "model", lm, data


def foreign_model(folder: Path, lm: Path) -> Path:
    """A model of another run in --save-dir (it must survive until the new one is complete)."""
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(lm)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_run_record(folder, {"fingerprint": {"seed": 1}})
    return folder


# each chain re-runs one command, killing it at the points listed, then lets it finish
CHAINS = {
    "a": ["mid-step@3", "checkpoint-staged@4", "final-weights"],
    "b": ["mid-step@5", "checkpoint-complete@6", "final-complete"],
    "c": ["mid-step@1", "checkpoint-published@6", "publish-exchanged"],  # over another run's model in --save-dir
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_killed_runs_end_like_an_uninterrupted_run(chain, launcher, reference, tmp_path):
    expected, lm, data = reference
    save_dir = tmp_path / "model"
    extra = []
    old = None
    if chain == "c":
        old = weights(foreign_model(save_dir, lm))
        extra = ["--overwrite-save-dir"]
    argv = train_argv(save_dir, lm, data, *extra)
    for i, point in enumerate(CHAINS[chain]):
        launcher.run(argv, tmp_path / f"run{i}.log", pause=point)
        # after any kill: no incomplete folder under a real name, and --save-dir is the old model or the new one
        for checkpoint in (tmp_path / "model-checkpoints").glob("checkpoint-*"):
            assert (checkpoint / RUN_FILE).is_file() and (checkpoint / "trainer_state.json").is_file()
        if save_dir.exists():
            current = weights(save_dir)
            assert (old is not None and all((current[k] == old[k]).all() for k in old)) or \
                max((current[k] - weights(expected)[k]).abs().max().item() for k in current) <= TOLERANCE
            load_captioner(save_dir)
    launcher.run(argv, tmp_path / "final.log")
    log = (tmp_path / "final.log").read_text()
    assert "Traceback" not in log and "internal error" not in log
    worst = assert_same_model(expected, save_dir)
    print(f"chain {chain}: largest weight difference to the uninterrupted run {worst:.3g}")
    load_captioner(save_dir)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # leftovers cleaned
    shutil.rmtree(tmp_path / "model-checkpoints")
