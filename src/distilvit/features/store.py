"""The on-disk feature store: one folder per encoder setting (:class:`~distilvit.features.keys.FeatureKey`).

Folder layout (``<root>/<key digest>/``)::

    meta.json     format version, the full key, feature shape (N, D) and dtype; written atomically
    features.bin  entry i = bytes [i * E, (i + 1) * E) with E = N * D * itemsize, raw little-endian
    index.bin     44-byte records: sha256 of the image (32) | slot (uint64) | crc32 of the first 40 bytes
    .lock         writers hold an exclusive flock on it

Crash safety: a batch's features are written and fsync'ed *before* its index records are appended, so an
index record only exists for data that is on disk. When reading, a record that is incomplete, fails its
crc, or points past the end of ``features.bin`` is ignored, and a writer drops such records and any data
after the last indexed entry before appending, so a run killed mid-write is simply redone where it stopped.

Reads are positioned reads (``os.pread``) of one entry each: nothing of the dataset is held in memory and,
unlike a memory map, touched pages do not pile up in the process's resident memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import torch

from distilvit.errors import DistilViTError
from distilvit.features.keys import FEATURE_DTYPES, FeatureKey, check_feature_dtype

try:  # POSIX; elsewhere writers are not serialised (one writer at a time is then up to the user)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger("distilvit.features")

FORMAT = "distilvit-features/1"
META, DATA, INDEX, LOCK = "meta.json", "features.bin", "index.bin", ".lock"
RECORD = struct.Struct("<32sQI")  # image sha256, slot, crc32 of the previous 40 bytes


def pack_record(digest: bytes, slot: int) -> bytes:
    body = struct.pack("<32sQ", digest, slot)
    return body + struct.pack("<I", zlib.crc32(body))


def read_index(path: Path, data_size: int, entry_bytes: int) -> tuple[dict[bytes, int], bool]:
    """Valid index records as ``{digest: slot}``, and whether every byte of the file was a valid record.

    A record is valid when it is complete, its crc matches, and its entry lies inside ``data_size`` bytes.
    """
    raw = path.read_bytes() if path.is_file() else b""
    whole = len(raw) // RECORD.size
    clean = len(raw) == whole * RECORD.size
    entries: dict[bytes, int] = {}
    for offset in range(0, whole * RECORD.size, RECORD.size):
        digest, slot, crc = RECORD.unpack_from(raw, offset)
        inside = entry_bytes > 0 and (slot + 1) * entry_bytes <= data_size
        if crc != zlib.crc32(raw[offset : offset + 40]) or not inside:
            clean = False
            continue
        entries[digest] = slot
    return entries, clean


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


class FeatureStore:
    """One folder of the feature cache: the features of one encoder setting, keyed by image content."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.key: FeatureKey | None = None  # set by for_key; needed to write the first entry

    @classmethod
    def for_key(cls, root: str | Path, key: FeatureKey) -> FeatureStore:
        """The store of ``key`` under ``root`` (created on first write); checks an existing one matches."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise DistilViTError(f"feature cache location {root} is a file; pass a folder (--feature-cache-dir).")
        store = cls(root / key.digest)
        meta = store.meta
        if meta is not None and json.dumps(meta.get("key"), sort_keys=True) != key.canonical():
            raise DistilViTError(
                f"feature cache {store.folder} belongs to another encoder setting (key collision or a hand-edited "
                f"folder); remove it with `distilvit cache clear {key.digest}`."
            )
        store.key = key
        return store

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def meta(self) -> dict | None:
        """The parsed ``meta.json`` (``None`` until the first entry is written)."""
        path = self.folder / META
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DistilViTError(f"unreadable {path} ({err}); remove it with `distilvit cache clear {self.name}`.")
        if meta.get("format") != FORMAT:
            raise DistilViTError(
                f"{self.folder} holds features in format {meta.get('format')!r}, this distilvit reads {FORMAT!r}; "
                f"remove it with `distilvit cache clear {self.name}`."
            )
        return meta

    def entry_layout(self) -> tuple[tuple[int, int], str, int] | None:
        """``(shape (N, D), dtype name, bytes per entry)``, or ``None`` for an empty store."""
        meta = self.meta
        if meta is None:
            return None
        shape = tuple(meta["shape"])
        itemsize = FEATURE_DTYPES[meta["dtype"]].itemsize
        return shape, meta["dtype"], math.prod(shape) * itemsize

    def index(self) -> dict[bytes, int]:
        """``{image digest: slot}`` of every complete entry."""
        layout = self.entry_layout()
        data = self.folder / DATA
        size = data.stat().st_size if data.is_file() else 0
        return read_index(self.folder / INDEX, size, layout[2] if layout else 0)[0]

    def size_bytes(self) -> int:
        """Bytes on disk of every file of the store."""
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def info(self) -> dict:
        """Location, key, entries, feature shape, dtype and size on disk (for ``distilvit cache info``).

        A store this version cannot read gets a ``problem`` entry instead of an error, so it can be cleared.
        """
        try:
            meta, entries, problem = self.meta or {}, len(self.index()), None
        except DistilViTError as err:
            meta, entries, problem = {}, 0, str(err)
        return {
            "key": self.name,
            "path": str(self.folder),
            "encoder": (meta.get("key") or {}).get("encoder"),
            "entries": entries,
            "problem": problem,
            "feature_shape": meta.get("shape"),
            "dtype": meta.get("dtype"),
            "size_bytes": self.size_bytes(),
            "created": meta.get("created"),
        }

    # ------------------------------------------------------------------ access
    @contextmanager
    def writer(self):
        """Exclusive writer (waits for another process writing the same store); see :class:`FeatureWriter`.

        Raises:
            DistilViTError: the cache folder cannot be created or written (permissions, disk full).
        """
        with _cache_io(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.folder / LOCK, blocking=True):
            with _cache_io(self.folder):
                writer = FeatureWriter(self)
            try:
                yield writer
            finally:
                with _cache_io(self.folder):
                    writer.close()

    def reader(self) -> FeatureReader:
        layout = self.entry_layout()
        if layout is None:
            raise DistilViTError(f"feature cache {self.folder} is empty; nothing to read.")
        shape, dtype, _ = layout
        return FeatureReader(self.folder / DATA, shape, dtype)

    def remove(self) -> None:
        """Delete the store (refused while another process is writing it)."""
        with _locked(self.folder / LOCK, blocking=False):
            shutil.rmtree(self.folder)


@contextmanager
def _cache_io(folder: Path):
    """Turn file-system errors (permissions, disk full) into a :class:`DistilViTError` that says what to do."""
    try:
        yield
    except OSError as err:
        raise DistilViTError(
            f"cannot write the feature cache {folder}: {err.strerror or err}. Free some space, pass another "
            "--feature-cache-dir, or train without the cache (--no-cache-features)."
        ) from err


@contextmanager
def _locked(path: Path, *, blocking: bool):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with _cache_io(path.parent):
        handle = open(path, "a")  # noqa: SIM115 - closed by the `with handle` below
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                raise DistilViTError(f"{path.parent} is being written by another process; try again when it is done.")
            logger.info("waiting for another process that is writing %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FeatureWriter:
    """Appends entries to a store. Opening it repairs what an interrupted writer left behind."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self.meta = store.meta
        self.dtype_name = self.meta["dtype"] if self.meta else store.key.dtype
        self.dtype = check_feature_dtype(self.dtype_name)
        layout = store.entry_layout()
        self.entry_bytes = layout[2] if layout else 0
        data_path, index_path = store.folder / DATA, store.folder / INDEX
        size = data_path.stat().st_size if data_path.is_file() else 0
        self.entries, clean = read_index(index_path, size, self.entry_bytes)
        if not clean:  # drop torn or dangling records so that their slots can never be misread later
            valid = sorted(self.entries.items(), key=lambda item: item[1])
            _write_atomically(index_path, b"".join(pack_record(d, s) for d, s in valid))
        self.next_slot = max(self.entries.values()) + 1 if self.entries else 0
        self.data_fd = os.open(data_path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self.data_fd, self.next_slot * self.entry_bytes)  # data after the last indexed entry
        self.index_fd = os.open(index_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.written = 0

    def lookup(self, digest: bytes) -> int | None:
        return self.entries.get(digest)

    def append(self, digests: list[bytes], features: torch.Tensor) -> None:
        """Store ``features`` ``(B, N, D)`` (any float dtype, any device) under the image ``digests``.

        Digests already in the store are skipped. Raises :class:`DistilViTError` if the features do not fit
        the store's shape or overflow the storage dtype.
        """
        keep = [i for i, d in enumerate(digests) if d not in self.entries and d not in digests[:i]]
        if not keep:
            return
        features = features.detach()[keep].to("cpu")
        with _cache_io(self.store.folder):
            self._append(digests, keep, features)

    def _append(self, digests: list[bytes], keep: list[int], features: torch.Tensor) -> None:
        self._check_layout(tuple(features.shape[1:]))
        stored = features.to(self.dtype).contiguous()
        if not torch.isfinite(stored).all():
            if not torch.isfinite(features).all():
                raise DistilViTError("the encoder produced NaN or infinite features; check the encoder weights.")
            raise DistilViTError(
                f"encoder features overflow {self.dtype_name} (largest magnitude {features.abs().max():.3g}); "
                "use --feature-dtype bf16 or fp32."
            )
        self._write_data(stored.view(torch.uint8).numpy().tobytes(), self.next_slot * self.entry_bytes)
        os.fsync(self.data_fd)  # the data is durable before any record points at it
        records = []
        for offset, i in enumerate(keep):
            records.append(pack_record(digests[i], self.next_slot + offset))
        self._write_index(b"".join(records))
        for offset, i in enumerate(keep):
            self.entries[digests[i]] = self.next_slot + offset
        self.next_slot += len(keep)
        self.written += len(keep)

    def _check_layout(self, shape: tuple[int, int]) -> None:
        if self.meta is None:
            self.meta = {
                "format": FORMAT, "key": json.loads(self.store.key.canonical()), "shape": list(shape),
                "dtype": self.dtype_name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _write_atomically(self.store.folder / META, json.dumps(self.meta, indent=1, sort_keys=True).encode())
            self.entry_bytes = math.prod(shape) * self.dtype.itemsize
        elif list(shape) != self.meta["shape"]:
            raise DistilViTError(
                f"the encoder gives features of shape {list(shape)} but {self.store.folder} holds {self.meta['shape']} "
                f"for the same encoder setting; remove it with `distilvit cache clear {self.store.name}`."
            )

    def _write_data(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.data_fd, view, offset)
            view, offset = view[written:], offset + written

    def _write_index(self, records: bytes) -> None:
        view = memoryview(records)
        while view:
            view = view[os.write(self.index_fd, view) :]

    def close(self) -> None:
        os.fsync(self.index_fd)
        os.close(self.index_fd)
        os.close(self.data_fd)


class FeatureReader:
    """Reads single entries by slot; picklable (each process opens its own file handle)."""

    _fd: int | None = None

    def __init__(self, path: Path, shape: tuple[int, int], dtype: str):
        self.path = Path(path)
        self.shape = tuple(shape)
        self.dtype = FEATURE_DTYPES[dtype]
        self.entry_bytes = math.prod(self.shape) * self.dtype.itemsize
        self._fd: int | None = None

    def read(self, slot: int) -> torch.Tensor:
        """The ``(N, D)`` features of entry ``slot``, in the storage dtype."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buffer = bytearray(self.entry_bytes)
        if hasattr(os, "preadv"):
            got = os.preadv(self._fd, [buffer], slot * self.entry_bytes)
        else:  # pragma: no cover
            data = os.pread(self._fd, self.entry_bytes, slot * self.entry_bytes)
            buffer[: len(data)], got = data, len(data)
        if got != self.entry_bytes:
            raise DistilViTError(f"{self.path} is shorter than its index says (entry {slot}); clear the cache.")
        return torch.frombuffer(buffer, dtype=self.dtype).view(self.shape)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def list_stores(root: str | Path) -> list[FeatureStore]:
    """The stores under ``root`` (folders with a ``meta.json``), by name."""
    root = Path(root)
    if not root.exists():
        return []
    if not root.is_dir():
        raise DistilViTError(f"feature cache location {root} is a file, not a folder.")
    return [FeatureStore(p) for p in sorted(root.iterdir()) if (p / META).is_file()]
