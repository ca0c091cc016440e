"""The dataset card (``README.md`` with YAML metadata) written with a merged or de-biased dataset."""

from __future__ import annotations

from distilvit import __version__
from distilvit.hub.card import command_line

_COLUMNS = {
    "image": "the image (encoded bytes)",
    "alt_text": "the captions of the image (list of strings)",
    "source": "the dataset spec the image came from (the first one, for images found in several)",
    "source_id": "the image's id within that source",
    "image_hash": "SHA-256 of the encoded image bytes (unique: duplicates were merged)",
    "original_alt_text": "the captions before `distilvit data debias`",
    "debias_rules": "the de-bias rules that changed this row's captions",
    "debias_flagged": "true when a rewrite would have emptied a caption (that caption was kept as it was)",
    "objects": "object labels of the image",
}


def dataset_card(title: str, *, counts: dict[str, int], summary: list[str], config: dict,
                 columns: list[str], argv: list[str] | None = None) -> str:
    """Markdown with YAML metadata: the splits and their Parquet files, the counts, how it was made."""
    total = sum(counts.values())
    size = ("n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000
            else "100K<n<1M" if total < 1_000_000 else "n>1M")
    yaml = [
        "---", "task_categories:", "- image-to-text", "tags:", "- image-captioning", "- distilvit",
        "size_categories:", f"- {size}", "configs:", "- config_name: default", "  data_files:",
        *[line for name, count in counts.items() if count for line in (f"  - split: {name}", f"    path: data/{name}-*.parquet")],
        "---",
    ]
    command = command_line(argv)
    lines = [
        *yaml, "", f"# {title}", "",
        f"Made with distilvit {__version__}.", "",
        "## Counts", "",
        "| split | images |", "|---|---|", *(f"| {name} | {count} |" for name, count in counts.items()),
        f"| total | {total} |", "",
        *summary, "",
        "## Columns", "",
        *(f"- `{name}`: {_COLUMNS.get(name, 'carried over from the input')}" for name in columns), "",
        "## How it was made", "",
        *(f"- {key}: {value}" for key, value in config.items()), "",
        "```bash", command or "(not started from the command line)", "```", "",
        "Load it with `datasets.load_dataset(\"parquet\", data_dir=\"data\")` from this folder, "
        "`datasets.load_from_disk(FOLDER)`, or train on it with `distilvit train --dataset FOLDER`.", "",
    ]
    return "\n".join(lines)
