"""Load test for `distilvit serve`: a real uvicorn server on 127.0.0.1 under concurrent good and bad requests.

Starts `distilvit serve MODEL` in a subprocess, sends REQUESTS requests from CONCURRENCY concurrent clients
(a fraction of them malformed: a text file, corrupt and truncated images, a decompression-bomb header, the
wrong form field, too many images), and checks that no request gets a 5xx and that every malformed request
gets its own 4xx. Writes latency percentiles, throughput, status counts, batching statistics and the
machine to OUT/NAME.json and OUT/NAME.md.

    python benchmarks/load_test.py [--model MODEL_OR_ONNX_DIR] [--requests 500] [--concurrency 16]
                                   [--malformed 0.1] [--out benchmarks/results]

Without --model it serves an untrained tiny model (built like the test models), which measures the server
(upload handling, batching, HTTP) rather than the model. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
MAX_IMAGES = 16  # the server's --max-images in this benchmark


def _encode(size, fmt="PNG", colour=(120, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``."""
    data = bytearray(_encode((1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _valid(rng: random.Random) -> list:
    count = rng.choice([1, 1, 1, 2])
    files = []
    for i in range(count):
        size = (rng.randint(48, 320), rng.randint(48, 320))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        fmt, mime = rng.choice([("PNG", "image/png"), ("JPEG", "image/jpeg")])
        files.append(("images", (f"img{i}.{fmt.lower()}", _encode(size, fmt, colour), mime)))
    return files


#: malformed request kinds -> (builder, the status the server must answer)
MALFORMED = {
    "text_file": (lambda: [("images", ("notes.txt", b"just text", "text/plain"))], 415),
    "corrupt": (lambda: [("images", ("x.jpg", os.urandom(2000), "image/jpeg"))], 400),
    "truncated": (lambda: [("images", ("t.jpg", _encode((256, 256), "JPEG")[:400], "image/jpeg"))], 400),
    "bomb_header": (lambda: [("images", ("bomb.png", _bomb_png(30_000, 30_000), "image/png"))], 413),
    "wrong_field": (lambda: [("file", ("a.png", _encode((32, 32)), "image/png"))], 422),
    "too_many_images": (lambda: [("images", (f"{i}.png", _encode((8, 8)), "image/png"))
                                 for i in range(MAX_IMAGES + 1)], 413),
}


def build_requests(count: int, malformed_fraction: float, seed: int = 0) -> list[tuple[str, list, int | None]]:
    """``(kind, files, expected status or None for valid)``: malformed ones spread evenly, kinds in turn."""
    rng = random.Random(seed)
    every = round(1 / malformed_fraction) if malformed_fraction > 0 else 0
    kinds = list(MALFORMED)
    requests = []
    for i in range(count):
        if every and i % every == every - 1:
            kind = kinds[(i // every) % len(kinds)]
            build, status = MALFORMED[kind]
            requests.append((kind, build(), status))
        else:
            requests.append(("valid", _valid(rng), None))
    return requests


async def _send_all(url: str, requests: list, concurrency: int, progress: bool) -> list[dict]:
    results: list[dict] = [{} for _ in requests]
    order = iter(range(len(requests)))
    bar = tqdm(total=len(requests), desc="requests", unit="req", disable=not progress)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker():
            for index in order:
                kind, files, expected = requests[index]
                start = time.perf_counter()
                try:
                    response = await client.post("/caption", files=files)
                    status, body = response.status_code, response.json()
                except (httpx.HTTPError, ValueError) as err:
                    status, body = 0, {"error": f"{type(err).__name__}: {err}"}
                results[index] = {"kind": kind, "expected": expected, "status": status, "body": body,
                                  "images": sum(1 for f in files if f[0] == "images"),
                                  "latency_ms": (time.perf_counter() - start) * 1000}
                bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return results


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p):
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(ordered[-1], 1),
            "mean": round(sum(ordered) / len(ordered), 1)}


def summarize(results: list[dict], wall_s: float) -> dict:
    """Latency percentiles, throughput, status counts and the checks (no 5xx, each malformed its 4xx)."""
    statuses: dict[str, int] = {}
    by_kind: dict[str, dict] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        kind = by_kind.setdefault(r["kind"], {"expected": r["expected"] or 200, "count": 0, "statuses": {}})
        kind["count"] += 1
        kind["statuses"][str(r["status"])] = kind["statuses"].get(str(r["status"]), 0) + 1
    ok = [r for r in results if r["status"] == 200]
    wrong = [r for r in results if r["status"] != (r["expected"] or 200)
             or (r["status"] == 200 and len(r["body"].get("captions", [])) != r["images"])]
    return {
        "requests": len(results),
        "wall_s": round(wall_s, 2),
        "throughput_rps": round(len(results) / wall_s, 1),
        "captioned_images_per_s": round(sum(r["images"] for r in ok) / wall_s, 1),
        "latency_ms": {"all": _percentiles([r["latency_ms"] for r in results]),
                       "valid": _percentiles([r["latency_ms"] for r in results if r["kind"] == "valid"]),
                       "malformed": _percentiles([r["latency_ms"] for r in results if r["kind"] != "valid"])},
        "status_counts": dict(sorted(statuses.items())),
        "by_kind": by_kind,
        "server_errors_5xx": sum(1 for r in results if r["status"] >= 500 or r["status"] == 0),
        "unexpected_answers": len(wrong),
        "unexpected_examples": [{k: r[k] for k in ("kind", "expected", "status", "body")} for r in wrong[:5]],
    }


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server_process(model: str, port: int, server_args: list[str]):
    """`distilvit serve MODEL` in a subprocess (as a user runs it), stopped on exit."""
    command = [sys.executable, "-m", "distilvit.cli.main", "serve", model, "--port", str(port),
               "--max-images", str(MAX_IMAGES), "--log-level", "warning", *server_args]
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield lambda: process.poll() is None, lambda: log_path.read_text()[-3000:]
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def server_thread(model: str, port: int, server_args: list[str]):
    """The same server (uvicorn on 127.0.0.1) in a thread of this process: no start-up imports (for tests)."""
    import uvicorn

    from distilvit.cli.main import build_parser
    from distilvit.cli.serve import limits_from_args
    from distilvit.serving import create_app, load_backend

    args = build_parser().parse_args(["serve", model, "--max-images", str(MAX_IMAGES), *server_args])
    backend = load_backend(model, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    app = create_app(backend, limits_from_args(args))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield thread.is_alive, lambda: "(see the log above)"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_ready(url: str, alive, log_tail, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server stopped:\n{log_tail()}")
        try:
            return httpx.get(f"{url}/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /health within {timeout_s} s:\n{log_tail()}")


def tiny_model(folder: Path) -> Path:
    """An untrained tiny captioner (the test suite's tiny SigLIP + Llama), saved to ``folder/model``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_helpers import make_model_dir
    from tiny_models import make_encoder, make_lm

    return make_model_dir(folder / "model", make_encoder(folder / "encoder"), make_lm(folder / "lm"))


def run_benchmark(model: str, *, requests: int = 500, concurrency: int = 16, malformed: float = 0.1,
                  server_args: list[str] | None = None, in_process: bool = False, progress: bool = True) -> dict:
    """Serve ``model`` (a subprocess, or a thread with ``in_process``), run the load, stop the server;
    the summary with the server's settings and the machine."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = server_thread if in_process else server_process
    planned = build_requests(requests, malformed)
    with serve(model, port, server_args or []) as (alive, log_tail):
        health = wait_ready(url, alive, log_tail)
        start = time.perf_counter()
        results = asyncio.run(_send_all(url, planned, concurrency, progress))
        wall_s = time.perf_counter() - start
        after = httpx.get(f"{url}/health", timeout=10).json()
    summary = summarize(results, wall_s)
    summary["load"] = {"requests": requests, "concurrency": concurrency, "malformed_fraction": malformed,
                       "server": "thread" if in_process else "subprocess", "server_args": server_args or []}
    summary["server"] = {"model": health["model"], "limits": health["limits"], "batching": after["batching"]}
    summary["machine"] = machine()
    return summary


def to_markdown(summary: dict) -> str:
    lat, load, batching = summary["latency_ms"], summary["load"], summary["server"]["batching"]
    model, box = summary["server"]["model"], summary["machine"]
    lines = [
        "# `distilvit serve` load test", "",
        (f"{load['requests']} requests, {load['concurrency']} concurrent clients, {load['malformed_fraction']:.0%} "
         f"malformed; server options {load.get('server_args') or 'default'}; model: "
         f"{summary.get('model_label') or model.get('path')} ({model.get('backend')})."),
        (f"Machine: {box['cpu']}, {box['cores']} cores, load average at start {box['load_average_at_start']} "
         "(shared with other jobs)."), "",
        "| | value |", "|---|---|",
        f"| wall time | {summary['wall_s']} s |",
        f"| throughput | {summary['throughput_rps']} requests/s, {summary['captioned_images_per_s']} captioned images/s |",
        f"| mean batch size | {batching['mean_batch_size']} ({batching['batches']} batches) |",
        f"| 5xx answers | {summary['server_errors_5xx']} |",
        f"| answers other than expected | {summary['unexpected_answers']} |", "",
        "| latency (ms) | p50 | p90 | p99 | max |", "|---|---|---|---|---|",
    ]
    for name, values in lat.items():
        if values:
            lines.append(f"| {name} | {values['p50']} | {values['p90']} | {values['p99']} | {values['max']} |")
    lines += ["", "| request kind | expected | count | statuses |", "|---|---|---|---|"]
    for kind, info in summary["by_kind"].items():
        lines.append(f"| {kind} | {info['expected']} | {info['count']} | {info['statuses']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or ONNX bundle (default: an untrained tiny model)")
    parser.add_argument("--requests", type=int, default=500, help="requests to send")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--malformed", type=float, default=0.1, help="fraction of malformed requests")
    parser.add_argument("--server-args", default="", help="extra `distilvit serve` options, e.g. '--max-batch-size 16'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--name", default="load_test", help="result file name (without extension)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server subprocess is stopped too
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_model(Path(tmp)))
        summary = run_benchmark(model, requests=args.requests, concurrency=args.concurrency,
                                malformed=args.malformed, server_args=args.server_args.split())
    summary["model_label"] = f"`{args.model}`" if args.model else "an untrained tiny model (tests/tiny_models.py)"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    failed = summary["server_errors_5xx"] or summary["unexpected_answers"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
