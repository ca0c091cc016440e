"""The Hub round trip, offline: ``train --push-to-hub`` and loading by Hub id, through the real ``huggingface_hub``
code talking to a stand-in for the Hub HTTP API on 127.0.0.1 (tests/hub_standin.py).

The CLI runs in subprocesses with ``HF_ENDPOINT`` pointing at the stand-in (``huggingface_hub`` reads it at import);
the in-process tests patch ``huggingface_hub.constants`` the same way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import TOKEN, FakeHub, Repo
from PIL import Image

from distilvit.cli.main import main

SRC = Path(__file__).resolve().parents[1] / "src"
REPO = "user/tiny"


def train_argv(tiny_dirs, folder: Path) -> list[str]:
    return [
        "train", "--dataset", "shapes", "--sample", "16", "--eval-sample", "4", "--eval-captions", "4",
        "--encoder-model", "scratch:siglip-tiny", "--decoder-model", str(tiny_dirs("llama")),
        "--max-steps", "2", "--batch-size", "4", "--eval-steps", "2", "--save-steps", "2", "--warmup-steps", "0",
        "--checkpoints-dir", str(folder / "ckpt"), "--save-dir", str(folder / "model"),
    ]


def hub_env(hub: FakeHub, hf_home: Path, *, offline: bool = False, token: str | None = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=str(SRC) + os.pathsep + env.get("PYTHONPATH", ""), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    if token:
        env["HF_TOKEN"] = token
    return env


def cli(argv: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilvit.cli.main", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, tiny_dirs, tmp_path_factory):
    """``train --push-to-hub --hub-model-id user/tiny`` run once as a subprocess: the local run folder."""
    folder = tmp_path_factory.mktemp("push-run")
    done = cli([*train_argv(tiny_dirs, folder), "--push-to-hub", "--hub-model-id", REPO],
               hub_env(hub, folder / "hf-home"))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "red.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(path)
    return path


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_uploads_exactly_the_final_model_folder_and_a_card(pushed, hub):
    uploaded = hub.files(REPO)
    local = local_files(pushed / "model")
    assert set(uploaded) == set(local) | {"README.md"}
    assert all(uploaded[name] == data for name, data in local.items())
    for needed in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
                   "distilvit_processor.json", "training_log.json"):
        assert needed in uploaded
    assert not [n for n in uploaded if n.startswith("checkpoint-") or n.endswith((".pt", ".bin", ".pth"))]
    assert any((pushed / "ckpt").glob("checkpoint-*")), "the run wrote checkpoints, and none was pushed"
    card = uploaded["README.md"].decode()
    assert card.startswith("---\n") and "pipeline_tag: image-to-text" in card
    final = json.loads(local["training_log.json"])["final_metrics"]
    assert f"| loss | {final['eval_loss']:.4f} |" in card
    assert "distilvit train --dataset shapes --sample 16" in card and f"--hub-model-id {REPO}" in card
    commits = [path for method, path in hub.requests if method == "POST" and path.endswith("/commit/main")]
    assert commits == [f"/api/models/{REPO}/commit/main"]  # one commit: folder + card


def test_caption_by_hub_id_matches_the_local_folder(pushed, hub, image_file, tmp_path, capsys):
    assert main(["caption", str(pushed / "model"), str(image_file), "--json", "--max-new-tokens", "5"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["caption"]
    fresh = tmp_path / "hf-home"
    done = cli(["caption", REPO, str(image_file), "--json", "--max-new-tokens", "5", "--revision", "main"],
               hub_env(hub, fresh, token=None))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)[0]["caption"] == expected
    # the cache now holds it: offline, the same captions, and not one request to the Hub
    before = len(hub.requests)
    done = cli(["caption", REPO, str(image_file), "--json", "--max-new-tokens", "5"], hub_env(hub, fresh, offline=True))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)[0]["caption"] == expected
    assert len(hub.requests) == before


# ---------------------------------------------------------------- in process: huggingface_hub patched to the stand-in
@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    """``huggingface_hub`` (already imported, offline) pointed at the stand-in, with a fresh cache and a token."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.requests.clear()
    return hub


def publish(hub: FakeHub, repo_id: str, files: dict[str, bytes]) -> str:
    hub.repos[repo_id] = Repo()
    return hub.repos[repo_id].commit(files, "test upload")


def test_resolver_fetches_no_pickles_and_explains_failures(online, monkeypatch):
    from huggingface_hub import constants

    from distilvit.errors import ModelError
    from distilvit.hub.resolve import resolve_model

    first = publish(online, "user/mixed", {"config.json": b"{}", "model.safetensors": b"x", "pytorch_model.bin": b"p",
                                           "optimizer.pt": b"o", "tokenizer.json": b"{}", "README.md": b"card"})
    folder = resolve_model("user/mixed")
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    assert not [path for _, path in online.requests if path.endswith((".bin", ".pt"))]
    online.repos["user/mixed"].commit({"config.json": b'{"v": 2}', "model.safetensors": b"y"}, "second")
    assert (resolve_model("user/mixed", first) / "config.json").read_bytes() == b"{}"  # a commit hash pins it
    assert (resolve_model("user/mixed") / "config.json").read_bytes() == b'{"v": 2}'
    with pytest.raises(ModelError, match="neither a local folder nor a model on the Hub"):
        resolve_model("user/unknown")
    with pytest.raises(ModelError, match="has no revision 'v9'"):
        resolve_model("user/mixed", "v9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_model("user/never-downloaded")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(ModelError, match="cannot reach the Hugging Face Hub"):
        resolve_model("user/other")


def test_unknown_repo_or_revision_gives_a_clear_error(online, pushed, image_file, tmp_path, capsys):
    publish(online, "user/copy", local_files(pushed / "model"))
    for argv, message in [(["caption", "user/no-such-model", str(image_file)], "neither a local folder nor a model"),
                          (["caption", "user/copy", str(image_file), "--revision", "v9"], "has no revision 'v9'"),
                          (["export", "user/copy", "--revision", "v9", "--out", str(tmp_path / "bundle")], "has no revision 'v9'"),
                          (["serve", "user/no-such-model", "--port", str(closed_port())], "neither a local folder")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "internal error" not in err, argv


def test_paths_are_never_looked_up_on_the_hub(online, tmp_path):
    from distilvit.errors import ModelError
    from distilvit.hub.resolve import resolve_model
    from distilvit.model import load_captioner

    for name in ("./no/such/model", "/no/such/model", "no/such/model", "distilvit-model", "~/nothing/here"):
        with pytest.raises(ModelError, match="does not exist"):
            load_captioner(name)
    with pytest.raises(ModelError, match="applies to Hub ids only"):
        resolve_model(str(tmp_path), "main")
    assert online.requests == []


def test_eval_serve_and_base_model_load_by_hub_id(online, pushed, tiny_dirs, tmp_path, capsys):
    from distilvit.serving import load_backend

    model = pushed / "model"
    sha = publish(online, "user/copy", local_files(model))
    online.repos["user/copy"].commit({**local_files(model), "config.json": b"not json"}, "a broken newer commit")
    backend = load_backend("user/copy", revision=sha, max_new_tokens=3)  # only the pinned commit loads
    assert backend.describe()["backend"] == "pytorch"
    assert main(["eval", "user/copy", "--revision", sha, "--sample", "2", "--no-meteor", "--max-new-tokens", "3",
                 "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "metrics.json").is_file()
    assert main(["export", "user/copy", "--revision", sha, "--quantize", "none", "--out", str(tmp_path / "bundle")]) == 0
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["source_model"] == f"user/copy@{sha}"
    argv = train_argv(tiny_dirs, tmp_path)
    assert main([*argv, "--base-model", "user/copy", "--revision", sha]) == 0
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert log["options"]["base_model"] == "user/copy" and log["options"]["base_model_revision"] == sha


# ---------------------------------------------------------------- --push-to-hub checks run before training
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("case, extra, message", [
    ("no token", ["--push-to-hub"], "needs a Hugging Face token"),
    ("unreachable", ["--push-to-hub"], "cannot reach the Hugging Face Hub"),
    ("offline", ["--push-to-hub"], "HF_HUB_OFFLINE is set"),
    ("bad token", ["--push-to-hub"], "rejected the token"),
    ("id without push", ["--hub-model-id", REPO], "--hub-model-id only applies with --push-to-hub"),
    ("bad id", ["--push-to-hub", "--hub-model-id", "a/b/c"], "not a valid Hub repository id"),
    ("revision without base", ["--revision", "main"], "--revision applies to --base-model only"),
])
def test_push_to_hub_fails_before_training(online, tiny_dirs, tmp_path, monkeypatch, capsys, case, extra, message):
    from huggingface_hub import constants

    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    if case == "unreachable":
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    if case == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    if case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "wrong")
    assert main([*train_argv(tiny_dirs, tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "model").exists()
    assert not [path for method, path in online.requests if method == "POST"]


def test_files_to_push_leave_out_trainer_state_and_pickles(tmp_path):
    from distilvit.errors import DistilViTError
    from distilvit.hub.push import files_to_push

    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_curves.png", "README.md",
                 "optimizer.pt", "pytorch_model.bin", "checkpoint-2/model.safetensors", ".partial/config.json",
                 "training_args.bin", "rng_state.pth", "scheduler.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in files_to_push(tmp_path)]
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "training_curves.png"]
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(DistilViTError, match="no complete model"):
        files_to_push(tmp_path)
