"""A bounded load test of `distilvit serve` (benchmarks/load_test.py, smaller): a real uvicorn server on
127.0.0.1 under concurrent requests, 10% of them malformed -> no 5xx, every malformed request its own 4xx."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from serving_helpers import make_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def load_test():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_concurrent_load_with_malformed_requests_gets_no_5xx(load_test, tmp_path, tiny_encoder, tiny_lm):
    model = make_model_dir(tmp_path / "model", tiny_encoder, tiny_lm)
    summary = load_test.run_benchmark(
        str(model), requests=80, concurrency=8, malformed=0.1, in_process=True, progress=False,
        server_args=["--max-new-tokens", "3", "--max-batch-size", "8", "--batch-wait-ms", "20"],
    )
    assert summary["server_errors_5xx"] == 0
    assert summary["unexpected_answers"] == 0, summary["unexpected_examples"]
    assert summary["by_kind"]["valid"]["statuses"] == {"200": summary["by_kind"]["valid"]["count"]}
    malformed = {kind: info for kind, info in summary["by_kind"].items() if kind != "valid"}
    assert sum(info["count"] for info in malformed.values()) == 8
    assert all(list(info["statuses"]) == [str(info["expected"])] for info in malformed.values())
    assert summary["server"]["batching"]["mean_batch_size"] > 1  # concurrent requests shared batches
    markdown = load_test.to_markdown(summary)
    assert "| valid |" in markdown and "p99" in markdown


def test_malformed_kinds_expect_client_errors(load_test):
    planned = load_test.build_requests(100, 0.1)
    assert sum(1 for kind, _, _ in planned if kind != "valid") == 10
    assert all(400 <= status < 500 for kind, _, status in planned if kind != "valid")
