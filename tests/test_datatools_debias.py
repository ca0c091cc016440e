"""``distilvit data debias``: the documented rules on known captions, exact counts on a fixture with known bias
terms, idempotence, flagged rows, a user rules file, and the optional rewrite through a local fake
OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
from datatools_fixtures import make_sources

from distilvit.cli.main import main
from distilvit.data import load_caption_dataset
from distilvit.datatools.rules import Rules, default_rules_text


@pytest.fixture(scope="module")
def rules():
    return Rules.load()


@pytest.mark.parametrize("caption,expected,fired", [
    ("a man riding a bicycle", "a person riding a bicycle", {"gender": 1}),
    ("A woman holding her dog", "A person holding their dog", {"gender": 2}),
    ("three boys playing with a ball", "several children playing with a ball", {"gender": 1, "counts": 1}),
    ("an asian girl next to a car", "a child next to a car", {"gender": 1, "ethnicity": 1}),
    ("a muslim father and his son", "a parent and their child", {"gender": 3, "religion": 1}),
    ("A black man and a white dog", "A person and a white dog", {"gender": 1, "ethnicity": 1}),
    ("a sign that says \"STOP\" on a street", "a sign on a street", {"text_in_image": 1}),
    ("French fries near two Indian women", "French fries near two people", {"gender": 1, "nationality": 1}),
    ("12 cats on a sofa in 2019", "several cats on a sofa in 2019", {"counts": 1}),
    ("An American flag", "A flag", {"nationality": 1}),
    ("two people sitting on a bench", "two people sitting on a bench", {}),
])
def test_rules_rewrite_known_captions(rules, caption, expected, fired):
    result = rules.rewrite(caption)
    assert (result.text, dict(result.rules), result.flagged) == (expected, fired, False)


def test_rewrite_is_idempotent_for_every_term_of_the_default_lists(rules):
    data = json.loads(default_rules_text())
    terms = [t for table in data["replace"].values() for t in table] + \
        [t for terms in data["remove"].values() for t in terms] + \
        [f"{t} man" for terms in data["remove_before_person"].values() for t in terms] + list(data["counts"]["numbers"])
    for term in terms:
        for caption in (f"a {term} near an {term} and 5 dogs", f"{term.capitalize()} with his hat, \"hello\""):
            once = rules.rewrite(caption)
            twice = rules.rewrite(once.text)
            assert once.changed and not once.flagged, caption
            assert twice.text == once.text and not twice.changed, (caption, once.text, twice.text)


def test_a_caption_never_becomes_empty_it_is_flagged(rules):
    result = rules.rewrite("Asian")
    assert result.text == "Asian" and result.flagged and result.rules == {"ethnicity": 1}


@pytest.fixture(scope="module")
def debiased(tmp_path_factory):
    root = tmp_path_factory.mktemp("debias")
    a, b = make_sources(root / "src")
    assert main(["data", "debias", "--dataset", str(a), str(b), "--out", str(root / "out")]) == 0
    return root


def test_changes_are_counted_exactly_by_rule(debiased):
    changes = json.loads((debiased / "out" / "debias_changes.json").read_text())
    # source A: 30 captions, A_CAPTIONS x5; source B: 10 captions without any term
    assert changes["captions"] == 40 and changes["captions_changed"] == 25 and changes["captions_flagged"] == 0
    assert changes["captions_changed_by_rule"] == {"gender": 25, "counts": 5, "ethnicity": 5, "religion": 5}
    assert changes["substitutions_by_rule"] == {"gender": 40, "counts": 5, "ethnicity": 5, "religion": 5}
    assert changes["terms_found"]["gender:man"] == 5 and changes["terms_found"]["religion:muslim"] == 5
    rows = (debiased / "out" / "debias_changes.csv").read_text().splitlines()
    assert len(rows) == 1 + 25 and "a muslim father and his son,a parent and their child" in "\n".join(rows)


def test_original_captions_are_kept_and_a_second_run_changes_nothing(debiased, capsys):
    first = datasets.load_from_disk(str(debiased / "out"))
    rows = [r for t in first.values() for r in t.select_columns(["alt_text", "original_alt_text", "debias_rules"])]
    assert {"alt_text": ["a parent and their child"], "original_alt_text": ["a muslim father and his son"],
            "debias_rules": ["gender", "religion"]} in rows
    capsys.readouterr()
    assert main(["data", "debias", "--dataset", str(debiased / "out"), "--out", str(debiased / "again")]) == 0
    assert "0 of 40 captions changed" in capsys.readouterr().out
    second = datasets.load_from_disk(str(debiased / "again"))
    for split in first:
        key = lambda t: sorted(zip(t["image_hash"], t["alt_text"], t["original_alt_text"]))  # noqa: E731
        assert key(second[split]) == key(first[split])
    assert load_caption_dataset(str(debiased / "out"), "train")[0]["captions"]


def test_a_user_rules_file_replaces_the_word_lists(tmp_path, debiased, capsys):
    data = json.loads(default_rules_text())
    data["replace"] = {"animals": {"dog": "animal"}}
    data["remove"] = {}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data))
    assert main(["data", "debias", "--dataset", str(debiased / "src" / "b"), "--out", str(tmp_path / "o"),
                 "--rules", str(path)]) == 0
    assert "10 of 10 captions changed" in capsys.readouterr().out
    assert datasets.load_from_disk(str(tmp_path / "o"))["train"][0]["alt_text"][0].startswith("an animal on")


@pytest.mark.parametrize("content,message", [
    ("{", "cannot read it as JSON"), ('{"replace": {}}', "lacks remove"), (None, "no such file"),
])
def test_a_bad_rules_file_exits_2(tmp_path, debiased, capsys, content, message):
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content)
    assert main(["data", "debias", "--dataset", str(debiased / "src" / "b"), "--out", str(tmp_path / "o"),
                 "--rules", str(path)]) == 2
    assert message in capsys.readouterr().err


class _FakeLLM(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: answers the user's caption upper-cased (or fails with 500)."""

    fail = False
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if self.fail or self.path != "/v1/chat/completions":
            self.send_response(500)
            payload = b'{"error": {"message": "broken"}}'
        else:
            self.send_response(200)
            caption = body["messages"][-1]["content"]
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": caption.upper()}}]}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def fake_llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeLLM.fail, _FakeLLM.seen = False, []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_rewrite_through_an_openai_compatible_endpoint(fake_llm, tmp_path, debiased, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    src = debiased / "src" / "a"
    assert main(["data", "debias", "--dataset", str(src), "--out", str(tmp_path / "o"), "--llm-url", fake_llm,
                 "--llm-model", "tiny"]) == 0
    assert len(_FakeLLM.seen) == 30 and _FakeLLM.seen[0]["model"] == "tiny"
    changes = json.loads((tmp_path / "o" / "debias_changes.json").read_text())
    assert changes["captions_changed_by_rule"]["llm"] == 30  # every answer differs (upper-cased)
    rows = [r for t in datasets.load_from_disk(str(tmp_path / "o")).values() for r in t]
    # the rules still apply to what the endpoint answered
    assert any(r["alt_text"] == ["A PERSON RIDING A BICYCLE"] for r in rows)


def test_a_failing_endpoint_exits_2(fake_llm, tmp_path, debiased, capsys):
    _FakeLLM.fail = True
    assert main(["data", "debias", "--dataset", str(debiased / "src" / "b"), "--out", str(tmp_path / "o"),
                 "--llm-url", fake_llm]) == 2
    assert "the rewrite endpoint" in capsys.readouterr().err
    assert main(["data", "debias", "--dataset", str(debiased / "src" / "b"), "--out", str(tmp_path / "o"),
                 "--llm-url", "ftp://x"]) == 2
