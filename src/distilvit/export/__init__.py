"""ONNX export and torch-free inference (the bundle format is in ``docs/export.md``).

* :class:`OnnxCaptioner` -- caption images with a bundle (onnxruntime, numpy, PIL, ``tokenizers``; no torch).
* :func:`export_bundle` -- write a bundle from a trained model folder (needs torch; imported lazily so that
  ``from distilvit.export import OnnxCaptioner`` never loads torch).

Modules: ``manifest`` (format, reading with checks), ``preprocess`` (image preprocessing), ``search``
(greedy/beam search), ``captioner``, ``graphs`` (torch modules -> ONNX), ``quantize`` (per-part recipes),
``bundle`` (the export itself).
"""

from distilvit.export.manifest import BundleError, read_manifest

__all__ = ["BundleError", "OnnxCaptioner", "export_bundle", "read_manifest"]


def __getattr__(name: str):
    # lazy: the CLI reads distilvit.export.manifest without loading onnxruntime (or torch, for export_bundle)
    if name == "OnnxCaptioner":
        from distilvit.export.captioner import OnnxCaptioner

        return OnnxCaptioner
    if name == "export_bundle":
        from distilvit.export.bundle import export_bundle

        return export_bundle
    raise AttributeError(f"module 'distilvit.export' has no attribute {name!r}")
