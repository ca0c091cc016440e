"""Grounding accuracy on the built-in ``shapes`` set.

Caption metrics reward fluent text; this checks the facts. Captions of ``shapes`` scenes list objects left
to right, so each predicted object can be compared with the reference object at the same position.
"""

from __future__ import annotations

from distilvit.data import parse_shapes_caption
from distilvit.data.shapes import HELD_OUT_PAIRS


def shapes_accuracy(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Per-attribute accuracy of predicted captions against ``shapes`` references.

    Returns ``parse_rate`` (predictions that follow the grammar), ``count_accuracy`` (right number of
    objects), ``colour_accuracy``/``shape_accuracy``/``size_accuracy`` (over reference objects, matched by
    left-to-right position; a missing or unparsable prediction counts as wrong) and ``scene_accuracy``
    (every object right); ``seen_scene_accuracy`` over scenes whose objects are all colour-shape pairs seen in
    training and ``held_out_scene_accuracy`` over scenes with a held-out pair (compositional generalisation;
    ``None`` where there is no such scene), with their counts ``seen_scenes``/``held_out_scenes``.
    """
    totals = {"parsed": 0, "count": 0, "scene": 0, "objects": 0, "size": 0, "colour": 0, "shape": 0}
    by_kind = {True: [0, 0], False: [0, 0]}  # held out? -> [right, scenes]
    for prediction, refs in zip(predictions, references):
        truth = parse_shapes_caption(refs[0])
        held_out = any((colour, shape) in HELD_OUT_PAIRS for _, colour, shape in truth)
        try:
            guess = parse_shapes_caption(prediction)
            totals["parsed"] += 1
        except ValueError:
            guess = []
        totals["count"] += len(guess) == len(truth)
        totals["scene"] += guess == truth
        by_kind[held_out][0] += guess == truth
        by_kind[held_out][1] += 1
        totals["objects"] += len(truth)
        for position, (size, colour, shape) in enumerate(truth):
            if position < len(guess):
                totals["size"] += guess[position][0] == size
                totals["colour"] += guess[position][1] == colour
                totals["shape"] += guess[position][2] == shape
    n = max(len(predictions), 1)
    objects = max(totals["objects"], 1)
    return {
        "parse_rate": totals["parsed"] / n,
        "count_accuracy": totals["count"] / n,
        "scene_accuracy": totals["scene"] / n,
        "colour_accuracy": totals["colour"] / objects,
        "shape_accuracy": totals["shape"] / objects,
        "size_accuracy": totals["size"] / objects,
        "seen_scene_accuracy": by_kind[False][0] / by_kind[False][1] if by_kind[False][1] else None,
        "held_out_scene_accuracy": by_kind[True][0] / by_kind[True][1] if by_kind[True][1] else None,
        "seen_scenes": by_kind[False][1],
        "held_out_scenes": by_kind[True][1],
    }
