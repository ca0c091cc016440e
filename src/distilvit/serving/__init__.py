"""Serving captioners: an HTTP API (FastAPI + micro-batching) and a Gradio app.

* :func:`load_backend` -- a model folder (PyTorch) or an ONNX bundle folder -> an object with
  ``caption(images) -> list[str]`` and ``describe() -> dict``.
* :func:`create_app` -- the FastAPI app (``POST /caption``, ``GET /health``, ``/docs``) under :class:`ServeLimits`.
* :mod:`distilvit.serving.gradio_app` -- the Gradio page (imports gradio; not imported here).

Module map: ``backend`` (model loading), ``limits`` (limits, API errors), ``uploads`` (validating and decoding
uploads), ``batching`` (micro-batching), ``errors`` (JSON error handlers), ``app`` (routes), ``openai_api``
(the OpenAI-compatible chat routes), ``data_urls`` (images sent as ``data:`` URLs).
Design notes: ``docs/serving.md``.
"""

from distilvit.serving.backend import CaptionBackend, OnnxBackend, TorchBackend, load_backend
from distilvit.serving.limits import APIError, ServeLimits


def create_app(backend, limits: ServeLimits | None = None):
    """The FastAPI app for ``backend`` (see :func:`distilvit.serving.app.create_app`; imports FastAPI lazily)."""
    from distilvit.serving.app import create_app as _create_app

    return _create_app(backend, limits)


__all__ = ["APIError", "CaptionBackend", "OnnxBackend", "ServeLimits", "TorchBackend", "create_app", "load_backend"]
