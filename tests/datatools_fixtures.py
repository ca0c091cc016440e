"""Small caption sources for the ``distilvit data`` tests: known duplicates, known bias terms."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

#: Captions of source A (30 images), by image number modulo 6: each holds known protected-attribute terms.
A_CAPTIONS = [
    "a man riding a bicycle",
    "a woman holding her dog",
    "three boys playing with a ball",
    "an asian girl next to a car",
    "two people sitting on a bench",
    "a muslim father and his son",
]


def colour(i: int) -> tuple[int, int, int]:
    return ((i * 37) % 256, (i * 91) % 256, (i * 53 + 17) % 256)


def write_folder(folder: Path, colours: list[tuple[int, int, int]], captions: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for i, (rgb, caption) in enumerate(zip(colours, captions)):
        Image.new("RGB", (16, 16), rgb).save(folder / f"img{i}.png")
        rows.append({"file_name": f"img{i}.png", "caption": caption})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def make_sources(root: Path) -> tuple[Path, Path]:
    """Source A: 30 distinct images. Source B: 10 images, the first 5 byte-identical to A's first 5."""
    a = write_folder(root / "a", [colour(i) for i in range(30)], [A_CAPTIONS[i % 6] for i in range(30)])
    b_colours = [colour(i) for i in range(5)] + [colour(100 + i) for i in range(5)]
    b = write_folder(root / "b", b_colours, [f"a dog on the grass {i}" for i in range(10)])
    return a, b
