"""``distilvit data merge --push-to-hub REPO``: upload the Parquet shards and the dataset card.

The checks before any work and the upload are :mod:`distilvit.hub.push`'s (:func:`~distilvit.hub.push.preflight`,
:func:`~distilvit.hub.push.upload`); the repository is a *dataset* repository. Only ``README.md`` and
``data/*.parquet`` are uploaded (the Hub's dataset viewer and :func:`datasets.load_dataset` read
them); the ``save_to_disk`` Arrow files stay local.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distilvit.errors import DistilViTError
from distilvit.hub.push import HubTarget, preflight, upload

logger = logging.getLogger("distilvit.datatools")


def dataset_preflight(repo_id: str | None, out: str | Path) -> HubTarget | None:
    """Check the Hub before the merge starts (``None`` when not pushing)."""
    if not repo_id:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise DistilViTError(f"--push-to-hub {repo_id!r} is not a valid Hub repository id ({err}); use owner/name "
                             "or name, with letters, digits, '-', '_' or '.'.") from None
    return preflight(True, repo_id, out)


def files_to_push(folder: Path) -> list[Path]:
    """``README.md`` and the Parquet shards of a written dataset folder."""
    return [folder / "README.md", *sorted((folder / "data").glob("*.parquet"))]


def push_dataset(target: HubTarget, folder: str | Path, *, private: bool) -> str:
    """Upload the dataset folder's card and Parquet shards in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    files = files_to_push(folder)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    url = upload(target, operations, message="distilvit: upload the merged dataset", repo_type="dataset",
                 private=private, saved=f"The dataset is saved in {folder}; upload it later with "
                 f"`hf upload {target.repo_id} {folder} --repo-type dataset`.")
    logger.info("pushed %d files to %s/datasets/%s (%s)", len(files), target.endpoint, target.repo_id, url)
    return url
