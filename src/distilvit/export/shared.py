"""Weights that two graphs of a bundle hold byte for byte, stored once in a shared external-data file.

In the quantised bundles the tied embedding table (``embed_tokens.onnx``) and output head (``decoder.onnx``)
are the same 8-bit codes split into the same high/low nibble arrays, scales and zero points
(:mod:`distilvit.export.nbits`). :func:`share_weights` writes each initializer that appears in more than one
graph once to ``table.bin`` and points every copy at it with ONNX external data (``location``, ``offset``,
``length``), so the bundle stores the 49152 x 576 table once instead of twice. Runtimes load the file with
the graphs: onnxruntime (Python) finds it next to the ``.onnx`` file it was given a path to; onnxruntime-web
needs it passed as the ``externalData`` session option (``web/src/captioner.js``). The manifest lists it
under ``external_data`` (``docs/export.md``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

SHARED_FILE = "table.bin"
ALIGN = 64  # offsets of shared tensors (cache-line aligned)
MIN_BYTES = 64  # scalars and other tiny duplicates stay in their graphs


def _candidates(graphs: dict[str, onnx.ModelProto]) -> list[list[tuple[str, onnx.TensorProto]]]:
    """Groups of initializers (from at least two graphs) with equal type and bytes."""
    by_size: dict[tuple[int, int], list] = defaultdict(list)
    for part, model in graphs.items():
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL and len(tensor.raw_data) >= MIN_BYTES:
                by_size[(tensor.data_type, len(tensor.raw_data))].append((part, tensor))
    groups = []
    for same_size in by_size.values():
        if len({part for part, _ in same_size}) < 2:
            continue
        by_digest: dict[bytes, list] = defaultdict(list)
        for part, tensor in same_size:
            by_digest[hashlib.sha256(tensor.raw_data).digest()].append((part, tensor))
        groups += [group for group in by_digest.values() if len({part for part, _ in group}) > 1]
    return groups


def share_weights(graphs: dict[str, onnx.ModelProto], folder: Path, name: str = SHARED_FILE) -> dict[str, list[str]]:
    """Store the initializers that several of ``graphs`` hold byte for byte once, in ``folder/name``.

    The graphs are changed in place (their copies become external-data references); save them into
    ``folder``. Returns ``{part: [name]}`` for the graphs that now read ``name`` (empty: nothing shared, no
    file written)."""
    groups = _candidates(graphs)
    if not groups:
        return {}
    readers: set[str] = set()
    with open(Path(folder) / name, "wb") as out:
        for group in groups:
            data = group[0][1].raw_data
            offset = -out.tell() % ALIGN + out.tell()
            out.write(b"\0" * (offset - out.tell()))
            out.write(data)
            for part, tensor in group:
                set_external_data(tensor, location=name, offset=offset, length=len(data))
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
                readers.add(part)
    return {part: [name] for part in graphs if part in readers}
