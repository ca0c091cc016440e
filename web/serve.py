"""A tiny static file server for the browser demo: ``web/`` at ``/`` and an exported bundle at ``/bundle/``.

    python web/serve.py --bundle path/to/bundle [--port 8000]

Standard library only; binds to 127.0.0.1. The page does all the work; this only serves files.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

WEB_DIR = Path(__file__).resolve().parent
BUNDLE_PREFIX = "/bundle/"
# module scripts must be served as JavaScript and wasm as application/wasm, whatever the system's mime.types says
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
         ".onnx": "application/octet-stream", ".data": "application/octet-stream",
         ".bin": "application/octet-stream"}


class Handler(SimpleHTTPRequestHandler):
    """Serves ``directory`` (web/), and ``bundle`` under ``/bundle/``; quiet unless ``verbose``."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, bundle: Path | None = None, verbose: bool = False, **kwargs):
        self.bundle = bundle
        self.verbose = verbose
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        route = unquote(urlsplit(path).path)
        if self.bundle is not None and route.startswith(BUNDLE_PREFIX):
            relative = Path(route[len(BUNDLE_PREFIX):])
            if ".." in relative.parts:
                return str(self.bundle / "__not_found__")
            return str(self.bundle / relative)
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        # cross-origin isolation: lets onnxruntime-web use threads (SharedArrayBuffer) with ?threads=N
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if self.verbose:
            super().log_message(format, *args)


def make_server(bundle: str | Path | None = None, port: int = 0, verbose: bool = False) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` (0: a free port) for web/ and ``bundle``; call ``serve_forever()``."""
    bundle_dir = Path(bundle).resolve() if bundle is not None else None
    if bundle_dir is not None and not (bundle_dir / "manifest.json").is_file():
        raise SystemExit(f"error: {bundle} has no manifest.json; pass the folder that `distilvit export` wrote.")
    handler = functools.partial(Handler, directory=str(WEB_DIR), bundle=bundle_dir, verbose=verbose)
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def start_in_thread(bundle: str | Path | None = None) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a free port in a daemon thread; returns it and its base URL (call ``shutdown()``)."""
    server = make_server(bundle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the distilvit browser demo (web/) and an exported bundle.")
    parser.add_argument("--bundle", help="folder written by `distilvit export`, served at /bundle/")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port; default 8000)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not (WEB_DIR / "node_modules" / "onnxruntime-web").is_dir():
        print(f"error: {WEB_DIR}/node_modules is missing; run `npm ci` in {WEB_DIR} first.", file=sys.stderr)
        return 2
    server = make_server(args.bundle, args.port, args.verbose)
    print(f"open http://127.0.0.1:{server.server_address[1]}/?bundle=bundle/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
