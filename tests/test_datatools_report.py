"""``distilvit data report`` and ``synth-prompts`` on fixtures with a known object distribution, known bias terms
and a duplicate image: exact counts, entropy and Gini computed by hand, alignment scores from a tiny captioner and a
tiny random CLIP checked against direct computations, the prompts of the rare classes."""

from __future__ import annotations

import csv
import io
import json
import math

import datasets
import pytest
from datatools_fixtures import make_sources
from PIL import Image

from distilvit.cli.main import main
from distilvit.data.schema import string_list_feature
from distilvit.datatools.objects import caption_nouns

# objects per image: dog in 6 images, cat in 3 (one with a car), car in 1, man in 1
OBJECTS = [["dog"]] * 6 + [["cat"], ["cat"], ["cat", "car"], ["man"]]
CAPTIONS = ["a man with a dog", "a man with a dog", "a woman and her dog", "a dog", "two dogs", "three dogs",
            "a cat", "an asian boy and a cat", "a cat near a car", "a man"]
COUNTS = {"dog": 6, "cat": 3, "car": 1, "man": 1}


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (i * 20, 255 - i * 20, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A saved dataset: 10 images (image 9 byte-identical to image 0), an ``objects`` column."""
    folder = tmp_path_factory.mktemp("known") / "set"
    images = [{"bytes": _png(i if i < 9 else 0), "path": None} for i in range(10)]
    features = datasets.Features({"image": datasets.Image(), "alt_text": string_list_feature(),
                                  "objects": string_list_feature(), "source_id": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images, "alt_text": [[c] for c in CAPTIONS], "objects": OBJECTS,
                                "source_id": [f"i{i}" for i in range(10)]}, features=features).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def report(known, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    assert main(["data", "report", "--dataset", str(known), "--out", str(out), "--rare-threshold", "0.1",
                 "--top-k", "2", "--worst", "3"]) == 0
    return out


def test_object_distribution_entropy_gini_topk_and_rare_classes(report):
    objects = json.loads((report / "report.json").read_text())["objects"]
    assert objects["method"] == "objects column" and objects["counts"] == COUNTS
    total = sum(COUNTS.values())  # 11
    entropy = -sum(c / total * math.log2(c / total) for c in COUNTS.values())
    assert objects["entropy_bits"] == pytest.approx(entropy)
    assert objects["normalised_entropy"] == pytest.approx(entropy / 2)  # log2(4 classes)
    values = list(COUNTS.values())  # Gini as mean absolute difference / (2 x mean): 34 / (2 * 16 * 2.75)
    mean_difference = sum(abs(a - b) for a in values for b in values) / len(values) ** 2
    assert objects["gini"] == pytest.approx(mean_difference / (2 * total / len(values))) and \
        objects["gini"] == pytest.approx(34 / 88)
    assert objects["top_k_share"] == pytest.approx(9 / 11)
    assert [(r["class"], r["count"]) for r in objects["rare_classes"]] == [("car", 1), ("man", 1)]
    assert objects["cooccurring_with_rare"] == {"car": [["cat", 1]], "man": []}
    rows = list(csv.DictReader((report / "objects.csv").open()))
    assert [(r["class"], r["images"], r["rare"]) for r in rows] == [
        ("dog", "6", "False"), ("cat", "3", "False"), ("car", "1", "True"), ("man", "1", "True")]


def test_duplicates_captions_and_protected_terms_are_counted_exactly(report):
    data = json.loads((report / "report.json").read_text())
    assert data["images"] == 10
    assert data["duplicates"] | {} == {"rows": 10, "duplicate_images": 1, "duplicate_image_rate": 0.1,
                                       "captions": 10, "duplicate_captions": 1, "duplicate_caption_rate": 0.1}
    words = [len(c.split()) for c in CAPTIONS]
    assert data["captions"]["words"]["mean"] == pytest.approx(sum(words) / 10)
    assert data["captions"]["length_histogram"] == {"2": 5, "5": 4, "6": 1}
    assert data["captions"]["vocabulary_size"] == len({w for c in CAPTIONS for w in c.split()})
    terms = data["protected_terms"]["by_category"]
    assert terms["gender"] == {"before": 6, "after": 0}  # man x3, woman, her, boy
    assert terms["ethnicity"] == {"before": 1, "after": 0}
    assert terms["religion"] == terms["nationality"] == {"before": 0, "after": 0}


def test_worst_examples_without_a_model_are_ranked_by_problems(report):
    data = json.loads((report / "report.json").read_text())
    assert data["worst_ranked_by"] == "problem count"
    worst = data["worst"]
    assert len(worst) == 3 and worst[0]["problems"] >= worst[1]["problems"] >= worst[2]["problems"]
    # row 7: two terms (asian, boy) and the only 6-word caption (above the 95th percentile, 5.55 words);
    # rows 0/1: "a man with a dog" twice (a duplicate caption, one term); row 9: "a man", row 0's image again
    problems = {int(row["index"]): int(row["problems"]) for row in csv.DictReader((report / "examples.csv").open())}
    assert problems == {0: 2, 1: 2, 2: 2, 3: 0, 4: 0, 5: 0, 6: 0, 7: 3, 8: 0, 9: 2}
    assert worst[0]["index"] == 7


def test_html_page_links_every_plot_and_thumbnail(report):
    page = (report / "report.html").read_text()
    for name in ("plots/length_histogram.png", "plots/lorenz.png", "plots/rank_frequency.png"):
        assert f'src="{name}"' in page and (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    thumbs = sorted(p.name for p in (report / "thumbs").iterdir())
    assert len(thumbs) == 3 and all(f'src="thumbs/{name}"' in page for name in thumbs)


def test_nouns_from_captions_when_there_is_no_objects_column(tmp_path):
    a, b = make_sources(tmp_path / "src")
    assert main(["data", "report", "--dataset", str(a), str(b), "--out", str(tmp_path / "r")]) == 0
    objects = json.loads((tmp_path / "r" / "report.json").read_text())["objects"]
    assert objects["method"] == "caption nouns (lemminflect lexicon)"
    # A: 30 captions, 6 kinds x 5 images; B: 10 x "a dog on the grass N" (5 of them the same images as A's)
    assert objects["counts"] == {"dog": 15, "grass": 10, "ball": 5, "bench": 5, "bicycle": 5, "boy": 5, "car": 5,
                                 "father": 5, "girl": 5, "man": 5, "people": 5, "son": 5, "woman": 5}
    assert caption_nouns("two cats sitting on the red benches of its garden") == ["cat", "bench", "garden"]


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory, tiny_lm):
    from distilvit.model import CaptionerSpec, build_captioner

    folder = tmp_path_factory.mktemp("captioner")
    model, processor = build_captioner(CaptionerSpec(encoder="scratch:siglip-tiny", decoder=str(tiny_lm)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (word-level tokenizer of tests/tiny_models.py), saved like a Hub CLIP folder."""
    import torch
    from tiny_models import make_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_alignment_scores_match_direct_computations(known, tiny_captioner, tiny_clip, tmp_path):
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from distilvit.model import load_captioner

    out = tmp_path / "r"
    assert main(["data", "report", "--dataset", str(known), "--out", str(out), "--model", str(tiny_captioner),
                 "--clip-model", str(tiny_clip), "--batch-size", "4", "--worst", "2"]) == 0
    rows = list(csv.DictReader((out / "examples.csv").open()))
    image = Image.open(io.BytesIO(_png(2))).convert("RGB")
    model, processor = load_captioner(tiny_captioner)
    with torch.no_grad():
        batch = processor.training_batch([CAPTIONS[2]], [image])
        expected_ll = -float(model(**batch).loss)
        clip = AutoModel.from_pretrained(tiny_clip).eval()
        text = AutoTokenizer.from_pretrained(tiny_clip)([CAPTIONS[2]], return_tensors="pt")
        text.pop("token_type_ids", None)
        pixels = AutoImageProcessor.from_pretrained(tiny_clip)(images=[image], return_tensors="pt")
        t = clip.get_text_features(**text)
        v = clip.get_image_features(**pixels)
        t, v = (x if hasattr(x, "dim") else x.pooler_output for x in (t, v))
        expected_clip = float(torch.nn.functional.cosine_similarity(t, v)[0])
    assert float(rows[2]["caption_log_likelihood"]) == pytest.approx(expected_ll, abs=1e-4)
    assert float(rows[2]["clip_similarity"]) == pytest.approx(expected_clip, abs=1e-4)
    data = json.loads((out / "report.json").read_text())
    assert data["worst_ranked_by"] == "caption_log_likelihood + clip_similarity"
    assert set(data["alignment"]) == {"caption_log_likelihood", "clip_similarity"}
    lls = [float(r["caption_log_likelihood"]) for r in rows]
    clips = [float(r["clip_similarity"]) for r in rows]
    rank = lambda values, i: sorted(values).index(values[i])  # noqa: E731
    combined = [(rank(lls, i) + rank(clips, i)) / 2 for i in range(10)]
    assert data["worst"][0]["index"] == min(range(10), key=lambda i: (combined[i], i))


@pytest.mark.parametrize("argv,message", [
    (["--model", "/nonexistent/model"], "does not exist"),
    (["--rare-threshold", "1.5"], "--rare-threshold must be between 0 and 1"),
    (["--rules", "/nonexistent/rules.json"], "no such file"),
])
def test_bad_input_exits_2(known, tmp_path, capsys, argv, message):
    assert main(["data", "report", "--dataset", str(known), "--out", str(tmp_path / "r"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_synth_prompts_for_the_rare_classes_with_debias_rules(report, tmp_path, capsys):
    out = tmp_path / "prompts.jsonl"
    assert main(["data", "synth-prompts", "--report", str(report), "--out", str(out)]) == 0
    prompts = [json.loads(line) for line in out.read_text().splitlines()]
    assert prompts == [
        {"prompt": "a photo of a car", "objects": ["car"], "original_count": 1, "type": "single"},
        {"prompt": "a car in a typical everyday setting, natural light", "objects": ["car"], "original_count": 1,
         "type": "single"},
        {"prompt": "a photo of a car and a cat", "objects": ["car", "cat"], "original_count": 1,
         "type": "combination"},
        {"prompt": "a photo of a person", "objects": ["person"], "original_count": 1, "type": "single"},
        {"prompt": "a person in a typical everyday setting, natural light", "objects": ["person"],
         "original_count": 1, "type": "single"},
        {"prompt": "a photo of a person and a car", "objects": ["person", "car"], "original_count": 1,
         "type": "combination"},
    ]
    assert "6 prompts for 2 rare classes (4 single, 2 combinations)" in capsys.readouterr().out
    assert main(["data", "synth-prompts", "--report", str(report), "--out", str(out)]) == 2  # exists
    assert main(["data", "synth-prompts", "--report", str(tmp_path), "--out", str(tmp_path / "p2.jsonl")]) == 2
    assert "no report.json" in capsys.readouterr().err
