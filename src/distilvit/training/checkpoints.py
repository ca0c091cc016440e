"""Crash-safe folders: checkpoints and the final model are written into a hidden staging sibling, given normal
permissions, fsynced, and only then renamed into place, so a ``kill -9`` at any moment leaves either the old
folder or the complete new one, never a half-written folder under the real name.

* staging folders are named ``.<name>.partial-<random>`` next to their destination; an existing destination is
  swapped out atomically (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, the old folder parked
  as ``.<name>.old-<random>`` and put back by :func:`recover` if a kill fell between them);
* a checkpoint is complete when it holds the weights, ``trainer_state.json`` and the run record (written last);
  :func:`scan_checkpoints` lists complete ones and names incomplete ones, which are never resumed from;
* :func:`pause_point` is a fault-injection hook for the crash tests: with ``DISTILVIT_PAUSE_AT=<point>`` the
  process announces itself in ``$DISTILVIT_PAUSE_FILE`` and waits there to be killed.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger("distilvit.training")

RUN_FILE = "distilvit_run.json"  # the run record: written last, so its presence marks a complete folder
TRAINER_STATE = "trainer_state.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LEFTOVER_RE = re.compile(r"^\..+\.(partial|old)-[0-9a-f]{8}$")


def pause_point(name: str, step: int | None = None) -> None:
    """Test hook: stop here (forever, until killed) when ``$DISTILVIT_PAUSE_AT`` names this point
    (``name`` or ``name@step``). Does nothing otherwise."""
    wanted = os.environ.get("DISTILVIT_PAUSE_AT")
    if not wanted or wanted not in (name, f"{name}@{step}"):
        return
    announce = os.environ.get("DISTILVIT_PAUSE_FILE")
    if announce:
        Path(announce).write_text(f"{name}@{step}\n")
    while True:
        time.sleep(60)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normalise_permissions(folder: Path) -> None:
    """Files 0666 and folders 0777 less the umask (temporary files and folders are created 0600/0700)."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(root))


def staging_path(final: Path, kind: str = "partial") -> Path:
    return final.parent / f".{final.name}.{kind}-{secrets.token_hex(4)}"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish(staged: Path, final: Path) -> None:
    """Make the complete folder ``staged`` appear as ``final`` in one step (replacing any folder there)."""
    normalise_permissions(staged)
    fsync_tree(staged)
    if not final.exists():
        os.rename(staged, final)
    elif _exchange(staged, final):  # ``staged`` now holds the old folder
        _fsync_dir(final.parent)
        pause_point("publish-exchanged")
        shutil.rmtree(staged, ignore_errors=True)
    else:
        parked = staging_path(final, "old")
        os.rename(final, parked)  # a kill here leaves ``parked``: recover() puts it back
        os.rename(staged, final)
        _fsync_dir(final.parent)
        shutil.rmtree(parked, ignore_errors=True)
    _fsync_dir(final.parent)


@contextmanager
def staged_folder(final: Path):
    """``with staged_folder(dest) as tmp:`` write into ``tmp``; on success it replaces ``dest`` atomically,
    on an exception it is removed and ``dest`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(final)
    staged.mkdir()
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    publish(staged, final)


def recover(final: Path) -> None:
    """After a kill: put back a parked old folder whose replacement never arrived; remove staging leftovers."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for path in sorted(final.parent.glob(f".{final.name}.*")):
        if not LEFTOVER_RE.match(path.name):
            continue
        if path.name.startswith(f".{final.name}.old-") and not final.exists():
            logger.warning("restoring %s from %s (a previous run was killed while replacing it)", final, path.name)
            os.rename(path, final)
            continue
        logger.warning("removing %s, left incomplete by a previous run that was killed", path)
        shutil.rmtree(path, ignore_errors=True)


def is_complete_checkpoint(folder: Path, *, need_run_record: bool = True) -> bool:
    folder = Path(folder)
    has_weights = any((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in WEIGHTS)
    has_state = (folder / TRAINER_STATE).is_file() and (folder / TRAINER_STATE).stat().st_size > 0
    return has_weights and has_state and (not need_run_record or (folder / RUN_FILE).is_file())


def checkpoint_step(folder: Path) -> int:
    return int(CHECKPOINT_RE.match(Path(folder).name).group(1))


def scan_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest step first; staging leftovers are removed and incomplete
    ``checkpoint-N`` folders are named in a warning and skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for path in sorted(folder.iterdir()):
        if LEFTOVER_RE.match(path.name) and path.is_dir():
            logger.warning("removing %s, left incomplete by a previous run that was killed", path)
            shutil.rmtree(path, ignore_errors=True)
    complete, incomplete = [], []
    for path in folder.iterdir():
        if path.is_dir() and CHECKPOINT_RE.match(path.name):
            (complete if is_complete_checkpoint(path) else incomplete).append(path)
    if incomplete:
        logger.warning("ignoring incomplete checkpoint(s) %s (no weights, trainer state or %s: a run was killed "
                       "while writing them, or an older distilvit wrote them); they are never resumed from",
                       ", ".join(str(p) for p in sorted(incomplete, key=checkpoint_step)), RUN_FILE)
    return sorted(complete, key=checkpoint_step)


def read_run_record(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_run_record(folder: Path, record: dict) -> None:
    (Path(folder) / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
