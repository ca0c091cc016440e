"""Server limits (with their defaults) and the JSON error every rejected request gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from distilvit.errors import DistilViTError

MB = 1024 * 1024

#: Largest image (width x height) by default: the value of ``distilvit.data.DEFAULT_MAX_PIXELS`` (not imported:
#: ``distilvit.data`` pulls in ``datasets``, seconds at every ``distilvit --help``).
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send, and how requests are batched.

    * ``max_upload_bytes``: the whole request body (all images plus multipart overhead) -> 413 above it;
    * ``max_pixels``: width x height of any one image, read from its header before decoding -> 413 above it
      (decompression-bomb guard);
    * ``max_images``: images per request -> 413 above it;
    * ``timeout_s``: seconds a request may wait for its captions (queueing + inference) -> 504 after it;
    * ``max_batch_size`` / ``batch_wait_ms``: images captioned in one model call, and how long the first
      waiting image waits for others to join its batch;
    * ``max_queue``: images waiting to be captioned; a request that would exceed it gets 503 (overloaded).
    """

    max_upload_bytes: int = 20 * MB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 16
    timeout_s: float = 60.0
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 256

    def __post_init__(self):
        for name, value in asdict(self).items():
            if name != "batch_wait_ms" and value <= 0:
                raise DistilViTError(f"{option_name(name)} must be greater than 0, got {value}.")
        if self.batch_wait_ms < 0:
            raise DistilViTError(f"--batch-wait-ms must be 0 or more, got {self.batch_wait_ms}.")
        if self.max_queue < self.max_images:
            raise DistilViTError(
                f"--max-queue ({self.max_queue}) must be at least --max-images ({self.max_images}), "
                "or a single full request could never be queued."
            )

    def as_dict(self) -> dict:
        return asdict(self)


def option_name(field: str) -> str:
    """The ``distilvit serve`` option that sets the :class:`ServeLimits` ``field``."""
    return {"max_upload_bytes": "--max-upload-mb", "timeout_s": "--timeout"}.get(field, "--" + field.replace("_", "-"))


class APIError(Exception):
    """A request the server refuses: HTTP ``status``, a short machine-readable ``code`` and a ``message``
    that says what was wrong and what to do. Sent as ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # extra response headers (e.g. telling clients not to retry)

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}
