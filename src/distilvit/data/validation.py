"""Checking images, sampling, and assembling the final dataset from several sources.

Rows are considered in the order given by :func:`distilvit.data.splits.sample_order` (natural order,
or a seeded permutation when ``sample`` is set). Each considered row's image is decoded; rows whose
image cannot be decoded are dropped and counted per source (one warning per source on
``distilvit.data``). With ``sample=N`` the walk stops after N usable rows, so only the images that
are needed are read, and a larger sample always contains a smaller one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import datasets

from distilvit.data.images import DEFAULT_MAX_PIXELS, image_problem
from distilvit.data.rows import SourceRows
from distilvit.data.schema import COLUMNS
from distilvit.data.splits import sample_order

logger = logging.getLogger("distilvit.data")

_CHUNK = 256


@dataclass
class _Tally:
    """What happened to the considered rows of one source."""

    inspected: int = 0
    unreadable: int = 0
    first_problem: str | None = None


def choose_rows(
    sources: Sequence[SourceRows],
    *,
    sample: int | None,
    seed: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[list[int]]:
    """For each source, the (sorted) rows to keep: readable images, at most ``sample`` in total."""
    locations = [(index, row) for index, rows in enumerate(sources) for row in range(len(rows))]
    order = [locations[i] for i in sample_order(len(locations), sample, seed)]
    target = len(order) if sample is None else min(sample, len(order))
    kept: list[list[int]] = [[] for _ in sources]
    tallies = [_Tally() for _ in sources]
    count = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = 0
        while count < target and start < len(order):
            chunk = order[start : start + _chunk_size(target - count)]
            start += len(chunk)
            problems = _problems(sources, chunk, pool, max_pixels)
            for (index, row), problem in zip(chunk, problems):
                if count >= target:
                    break
                tally = tallies[index]
                tally.inspected += 1
                if problem is None:
                    kept[index].append(row)
                    count += 1
                    continue
                tally.unreadable += 1
                if tally.first_problem is None:
                    tally.first_problem = f"{sources[index].image_ids[row]}: {problem}"
    for rows, tally in zip(sources, tallies):
        _log_unreadable(rows.source, tally)
    return [sorted(rows) for rows in kept]


def assemble(
    sources: Sequence[SourceRows], kept: Sequence[Sequence[int]]
) -> datasets.Dataset | None:
    """Concatenate the kept rows of every source into one dataset (``None`` if there are none)."""
    parts = [rows.to_dataset(keep) for rows, keep in zip(sources, kept) if keep]
    if not parts:
        return None
    combined = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    combined = combined.select_columns(list(COLUMNS))
    return combined.cast_column("image", datasets.Image())


def _chunk_size(needed: int) -> int:
    """How many rows to check at once: a little more than needed, within bounds."""
    return max(16, min(_CHUNK, needed + needed // 8 + 1))


def _problems(
    sources: Sequence[SourceRows],
    chunk: Sequence[tuple[int, int]],
    pool: ThreadPoolExecutor,
    max_pixels: int,
) -> list[str | None]:
    """The image problem (or ``None``) of every ``(source index, row)`` in ``chunk``."""
    by_source: dict[int, list[int]] = {}
    for position, (index, _row) in enumerate(chunk):
        if not sources[index].verified:
            by_source.setdefault(index, []).append(position)
    problems: list[str | None] = [None] * len(chunk)
    for index, chunk_positions in by_source.items():
        values = sources[index].image_values([chunk[p][1] for p in chunk_positions])
        results = pool.map(lambda value: image_problem(value, max_pixels=max_pixels), values)
        for chunk_position, problem in zip(chunk_positions, results):
            problems[chunk_position] = problem
    return problems


def _log_unreadable(source: str, tally: _Tally) -> None:
    """Warn once per source about rows dropped for an unreadable image."""
    if tally.unreadable:
        logger.warning(
            "skipped %d of %d rows from %s: unreadable image (first: %s)",
            tally.unreadable,
            tally.inspected,
            source,
            tally.first_problem,
        )
