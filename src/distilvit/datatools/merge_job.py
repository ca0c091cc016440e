"""The ``distilvit data merge`` job: checks, merge, write, optional push, and the summary printed."""

from __future__ import annotations

from pathlib import Path

from distilvit.datatools.card import dataset_card
from distilvit.datatools.merge import check_fractions, merge
from distilvit.datatools.push import dataset_preflight, push_dataset
from distilvit.datatools.writer import check_out_dir, write_dataset
from distilvit.errors import DataError


def merge_job(specs: list[str], out: str | Path, *, seed: int = 42, validation: float = 0.05, test: float = 0.05,
              sample: int | None = None, overwrite: bool = False, push_to_hub: str | None = None,
              private: bool = False) -> str:
    """Merge ``specs`` into ``out`` (and push); returns the summary to print."""
    if private and not push_to_hub:
        raise DataError("--private only applies with --push-to-hub REPO: add --push-to-hub, or drop --private.")
    check_fractions(validation, test)
    check_out_dir(out, overwrite=overwrite)
    target = dataset_preflight(push_to_hub, out)
    result = merge(specs, seed=seed, validation=validation, test=test, sample=sample)
    counts = result.counts()
    summary = [
        f"Merged from {', '.join(specs)}: {result.rows_read} rows read, {result.duplicates_dropped} duplicate "
        f"images dropped (same bytes; their captions were merged into the kept row).", "",
        "| source | images |", "|---|---|", *(f"| {k} | {v} |" for k, v in result.per_source.items()),
    ]
    config = {"sources": ", ".join(specs), "seed": seed, "split fractions (train/validation/test)":
              "/".join(f"{v:g}" for v in result.fractions.values()), "rows read": result.rows_read,
              "duplicate images dropped": result.duplicates_dropped, "sample per source": sample or "all rows"}
    card = dataset_card(Path(out).name, counts=counts, summary=summary, config=config,
                        columns=next(iter(result.splits.values())).column_names)
    folder = write_dataset(result.splits, out, card, overwrite=overwrite)
    lines = [f"wrote {folder}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) +
             f" images; {result.duplicates_dropped} duplicate images dropped (of {result.rows_read} rows read)"]
    if target is not None:
        lines.append(f"pushed to {push_dataset(target, folder, private=private)}")
    return "\n".join(lines)
