"""``distilvit train --push-to-hub``: check the Hub before training, upload the final model folder after it.

:func:`preflight` runs before any data or model is loaded: it rejects ``--hub-model-id`` without
``--push-to-hub``, ``HF_HUB_OFFLINE``, a missing token, an unreachable Hub and a rejected or read-only token,
and settles the repository id. :func:`push_model` uploads the saved model folder (weights, config, tokenizer,
image processor, ``distilvit_processor.json``, training log and curves) plus a generated model card
(``README.md``: metrics and training command) in one commit, through ``huggingface_hub``'s ``HfApi``. Never
checkpoints, optimizer/scheduler/RNG state or pickles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from distilvit.errors import DistilViTError
from distilvit.hub.card import model_card

logger = logging.getLogger("distilvit.hub")

WHOAMI_TIMEOUT_S = 10.0
# Never uploaded: Trainer state and pickles (the final folder holds none; this guards against leftovers).
_SKIPPED_PREFIXES = (".", "checkpoint-", "optimizer", "scheduler", "rng_state", "trainer_state", "training_args")
_SKIPPED_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tmp", ".partial"}


@dataclass(frozen=True)
class HubTarget:
    """Where ``--push-to-hub`` uploads: the repository, the token and the endpoint that accepted it."""

    repo_id: str
    token: str
    endpoint: str
    user: str


def preflight(push_to_hub: bool, hub_model_id: str | None, save_dir: str | Path) -> HubTarget | None:
    """Check that a push can succeed before training starts; ``None`` when not pushing.

    Raises :class:`DistilViTError` (exit 2) naming the problem and the fix.
    """
    if hub_model_id and not push_to_hub:
        raise DistilViTError("--hub-model-id only applies with --push-to-hub: add --push-to-hub, or drop "
                             "--hub-model-id.")
    if not push_to_hub:
        return None
    from huggingface_hub import constants, get_token, is_offline_mode

    endpoint = constants.ENDPOINT
    if is_offline_mode():
        raise DistilViTError("--push-to-hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set: unset it, or "
                             "train without --push-to-hub (and upload the folder later).")
    token = get_token()
    if not token:
        raise DistilViTError("--push-to-hub needs a Hugging Face token with write access: set HF_TOKEN or run "
                             "`hf auth login` (https://huggingface.co/settings/tokens), then train again.")
    if hub_model_id:
        _check_repo_id(hub_model_id)
    user = _whoami(endpoint, token)
    repo_id = hub_model_id if hub_model_id and "/" in hub_model_id else f"{user}/{hub_model_id or Path(save_dir).name}"
    _check_repo_id(repo_id)
    logger.info("the final model will be pushed to %s/%s as %s", endpoint, repo_id, user)
    return HubTarget(repo_id=repo_id, token=token, endpoint=endpoint, user=user)


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise DistilViTError(f"--hub-model-id {repo_id!r} is not a valid Hub repository id ({err}); use "
                             "owner/name with letters, digits, '-', '_' or '.'.") from None


def _whoami(endpoint: str, token: str) -> str:
    """The user name the token belongs to; a clear error when the Hub is unreachable or refuses the token."""
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers

    try:
        response = get_session().get(f"{endpoint}/api/whoami-v2", headers=build_hf_headers(token=token),
                                     timeout=WHOAMI_TIMEOUT_S)
        hf_raise_for_status(response)
        info = response.json()
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise DistilViTError(f"the Hugging Face Hub at {endpoint} rejected the token (HF_TOKEN or the token "
                                 "stored by `hf auth login`): set a valid token with write access.") from None
        raise DistilViTError(f"the Hugging Face Hub at {endpoint} answered {status} when checking the token; "
                             "try again later, or train without --push-to-hub.") from None
    except Exception as err:  # connection refused, DNS, timeout, TLS, a non-JSON answer
        raise DistilViTError(f"cannot reach the Hugging Face Hub at {endpoint} ({type(err).__name__}: "
                             f"{_first_line(err)}); --push-to-hub needs it. Check the network (or HF_ENDPOINT), "
                             "or train without --push-to-hub.") from None
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise DistilViTError("the Hugging Face token is read-only; --push-to-hub needs a token with write access.")
    if not info.get("name"):
        raise DistilViTError(f"the Hugging Face Hub at {endpoint} did not say whose token this is; check HF_ENDPOINT.")
    return str(info["name"])


def files_to_push(save_dir: str | Path) -> list[Path]:
    """The files of the final model folder that are uploaded (sorted; see the module docstring)."""
    folder = Path(save_dir)
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or path.is_symlink() or relative.as_posix() == "README.md":
            continue
        if any(part.startswith(_SKIPPED_PREFIXES) for part in relative.parts) or path.suffix in _SKIPPED_SUFFIXES:
            continue
        files.append(path)
    names = {p.relative_to(folder).as_posix() for p in files}
    if "config.json" not in names or not any(name.endswith(".safetensors") for name in names):
        raise DistilViTError(f"{folder} holds no complete model (config.json and safetensors weights); nothing "
                             "was pushed.")
    return files


def push_model(target: HubTarget, save_dir: str | Path, *, metrics: dict, options: dict) -> str:
    """Upload ``save_dir`` and its model card to ``target`` in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(save_dir)
    files = files_to_push(folder)
    card = model_card(target.repo_id, metrics=metrics, options=options)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    commit_url = upload(target, operations, message="distilvit: upload the trained model",
                        saved=f"The trained model is saved in {folder}; upload it later with "
                        f"`hf upload {target.repo_id} {folder}`.")
    logger.info("pushed %d files and the model card to %s/%s (%s)", len(files), target.endpoint, target.repo_id,
                commit_url)
    return commit_url


def upload(target: HubTarget, operations: list, *, message: str, saved: str, repo_type: str = "model",
           private: bool | None = None) -> str:
    """Create the repository if needed and commit ``operations`` in one commit; returns the commit URL.

    ``saved`` tells the user where the local copy is when the Hub fails (a :class:`DistilViTError`).
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=target.endpoint, token=target.token)
    try:
        api.create_repo(target.repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.create_commit(target.repo_id, repo_type=repo_type, operations=operations,
                                   commit_message=message)
    except Exception as err:  # the Hub went away or refused meanwhile: the local copy is intact
        raise DistilViTError(
            f"pushing to {target.endpoint}/{target.repo_id} failed ({type(err).__name__}: {_first_line(err)}). "
            + saved) from None
    return commit.commit_url


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
