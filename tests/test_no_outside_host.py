"""`distilvit serve` and `distilvit gradio` reach no host but this machine's loopback (docs/serving.md).

Each command runs as a user runs it, in a subprocess, behind a wrapper that records every host name the
process resolves (``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``) and every address it
connects a socket to, and refuses any that is not loopback (so nothing leaves the machine even when the test
fails, and the test behaves the same with and without internet access). The server starts, answers one
caption request from this process, and stops; then the log must hold loopback names and addresses only.

The child's environment is a user's, not the test suite's: the hub-offline switches the suite sets are
removed and ``GRADIO_ANALYTICS_ENABLED=True`` is set, so the app itself must turn Gradio's telemetry and
version check off (proxy variables are dropped, so that a CI proxy cannot stand between the server and itself). (The hooks see what goes through Python's ``socket`` module, which is every client used
here: httpx, urllib, huggingface_hub, asyncio; an event loop with its own resolver, such as uvloop, would not.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import encode, free_port, make_model_dir

SRC = Path(__file__).resolve().parents[1] / "src"

WRAPPER = r'''
import ipaddress, json, os, socket, sys

LOG = os.environ["DISTILVIT_NET_LOG"]


def loopback(host):
    if host is None:  # a passive (bind-any) lookup names no host
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def record(kind, host):
    with open(LOG, "a") as log:
        log.write(json.dumps([kind, host if host is None else str(host)]) + "\n")
    if not loopback(host):
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} is outside this machine (blocked by the test)")


real_getaddrinfo, real_byname, real_byname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex
real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex


def getaddrinfo(host, *args, **kwargs):
    record("resolve", host)
    return real_getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    record("resolve", host)
    return real_byname(host)


def gethostbyname_ex(host):
    record("resolve", host)
    return real_byname_ex(host)


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        record("connect", address[0])
    return real_connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        record("connect", address[0])
    return real_connect_ex(self, address)


socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
record("hooks installed", None)

from distilvit.cli.main import main

sys.exit(main(sys.argv[1:]))
'''

# what the suite sets for itself (tests/conftest.py) and a user's shell would not
SUITE_ONLY = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
              "GRADIO_ANALYTICS_ENABLED")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder, tiny_lm):
    return make_model_dir(tmp_path_factory.mktemp("netlog-model"), tiny_encoder, tiny_lm)


def run_recorded(tmp_path: Path, argv: list[str], url: str, ask) -> list[tuple[str, str | None]]:
    """Start ``distilvit *argv`` under the recording wrapper, wait for ``url``, call ``ask(url)`` once, stop the
    process; return the recorded ``(kind, host)`` pairs."""
    wrapper, log, out = tmp_path / "netlog_wrapper.py", tmp_path / "net.log", tmp_path / "server.out"
    wrapper.write_text(WRAPPER)
    # no proxy variables: they would route the server's own loopback checks through another host in some CI setups
    env = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY and not k.lower().endswith("_proxy")}
    env.update(DISTILVIT_NET_LOG=str(log), GRADIO_ANALYTICS_ENABLED="True", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    with open(out, "w") as sink:
        child = subprocess.Popen([sys.executable, str(wrapper), *argv], env=env, stdout=sink,
                                 stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert child.poll() is None, f"the server stopped:\n{out.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not come up:\n{out.read_text()[-3000:]}"
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        ask(url)
        time.sleep(1.0)  # anything the server does after answering (telemetry threads) gets its chance
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    records = [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
    assert records[:1] == [("hooks installed", None)], "the recording hooks did not run"
    return records


def outside(records) -> list:
    allowed = {None, "localhost", "127.0.0.1", "::1"}
    return sorted({r for r in records if r[1] not in allowed and not str(r[1]).startswith("127.")}, key=str)


def test_serve_starts_and_answers_without_reaching_another_host(model_dir, tmp_path):
    port = free_port()

    def ask(url):
        response = httpx.post(f"{url.rsplit('/', 1)[0]}/caption", timeout=120, trust_env=False,
                              files=[("images", ("red.png", encode((40, 30)), "image/png"))])
        assert response.status_code == 200, response.text
        assert isinstance(response.json()["captions"][0]["caption"], str)

    records = run_recorded(tmp_path, ["serve", str(model_dir), "--port", str(port), "--log-level", "warning"],
                           f"http://127.0.0.1:{port}/health", ask)
    assert outside(records) == []


def test_gradio_starts_and_answers_without_reaching_another_host(model_dir, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    port = free_port()
    image = tmp_path / "red.png"
    image.write_bytes(encode((40, 30)))

    def ask(url):
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        assert isinstance(client.predict(handle_file(str(image)), api_name="/caption"), str)

    records = run_recorded(tmp_path, ["gradio", str(model_dir), "--port", str(port)],
                           f"http://127.0.0.1:{port}/", ask)
    assert any(host == "127.0.0.1" for _, host in records)  # gradio's own start-up check, seen by the hooks
    assert outside(records) == []
