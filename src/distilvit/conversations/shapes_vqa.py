"""``shapes-vqa``: questions and short canonical answers about the built-in ``shapes`` scenes.

Same scenes, splits and held-out colour-shape pairs as ``shapes`` (:mod:`distilvit.data.shapes`): a question
about a purple circle in ``test`` can only be answered right by looking, since no training scene has one.

Question kinds (:data:`KINDS`), asked only where the answer is well defined:

* ``colour``: "what colour is the {shape}?" (a shape the scene holds once) -> "red";
* ``count``: "how many shapes are there?" -> "one" / "two" / "three";
* ``left_of``: "what is left of the {colour} {shape}?" (an object the scene holds once) -> "blue square" or
  "nothing" (the object directly to its left);
* ``exists``: "is there a {shape}?" -> "yes" / "no";
* ``describe``: "describe the image." -> the scene's caption (the ``shapes`` caption grammar).

Training conversations hold 1 to 3 questions about one image (the image in the first user turn); evaluation
samples hold one question each, every applicable kind once per scene.
"""

from __future__ import annotations

import functools
import random

from distilvit.data.shapes import SHAPES, Scene, ShapesConfig, render_scene, shapes_image_id, shapes_scenes
from distilvit.data.registry import SHAPES_VQA_NAME
from distilvit.model.configuration import IMAGE_TOKEN

NAME = SHAPES_VQA_NAME
KINDS = ("colour", "count", "left_of", "exists", "describe")
DESCRIBE = "describe the image."
NUMBERS = ("zero", "one", "two", "three")


def questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """``(kind, question, answer)`` for every kind that applies to ``scene`` (random choices from ``rng``)."""
    objects = scene.objects
    out = []
    shapes = [o.shape for o in objects]
    unique_shapes = [s for s in SHAPES if shapes.count(s) == 1]
    if unique_shapes:
        shape = rng.choice(unique_shapes)
        colour = next(o.colour for o in objects if o.shape == shape)
        out.append(("colour", f"what colour is the {shape}?", colour))
    out.append(("count", "how many shapes are there?", NUMBERS[len(objects)]))
    pairs = [(o.colour, o.shape) for o in objects]
    unique = [i for i, p in enumerate(pairs) if pairs.count(p) == 1]
    if unique:
        i = rng.choice(unique)
        answer = "nothing" if i == 0 else " ".join(pairs[i - 1])
        out.append(("left_of", f"what is left of the {pairs[i][0]} {pairs[i][1]}?", answer))
    shape = rng.choice(SHAPES)
    out.append(("exists", f"is there a {shape}?", "yes" if shape in shapes else "no"))
    out.append(("describe", DESCRIBE, scene.caption))
    return out


def _image(config: ShapesConfig, scene: Scene):
    return functools.partial(render_scene, scene, config.image_size)


def vqa_samples(split: str, *, seed: int = 42, single: bool | None = None, sample: int | None = None) -> list[dict]:
    """Samples ``{"id", "image" (a callable giving the PIL image), "messages", ...}`` of ``split``.

    ``single`` (default: on for validation/test) gives one single-question sample per applicable question
    kind and scene, with ``kind``, ``question``, ``answer`` and ``held_out`` (the scene holds a held-out
    colour-shape pair) for scoring; otherwise each scene gives one conversation of 1-3 questions.
    ``sample`` keeps the first N scenes.
    """
    config = ShapesConfig(seed=seed)
    scenes = shapes_scenes(config, split)[:sample]
    single = split != "train" if single is None else single
    samples = []
    for index, scene in enumerate(scenes):
        rng = random.Random(f"distilvit-shapes-vqa/{seed}/{split}/{index}")
        asked = questions(scene, rng)
        image_id = shapes_image_id(split, index)
        if single:
            for kind, question, answer in asked:
                samples.append({
                    "id": f"{image_id}-{kind}", "image": _image(config, scene),
                    "messages": [{"role": "user", "content": IMAGE_TOKEN + question},
                                 {"role": "assistant", "content": answer}],
                    "kind": kind, "question": question, "answer": answer, "held_out": scene.has_held_out_pair,
                })
            continue
        rng.shuffle(asked)
        messages = []
        for kind, question, answer in asked[: rng.randint(1, 3)]:
            messages.append({"role": "user", "content": (IMAGE_TOKEN if not messages else "") + question})
            messages.append({"role": "assistant", "content": answer})
        samples.append({"id": image_id, "image": _image(config, scene), "messages": messages})
    return samples
