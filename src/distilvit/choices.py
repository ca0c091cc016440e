"""Names of the model options' choices, importable without torch or transformers.

``distilvit --help`` builds every sub-command's parser from these; the model modules use the same tuples
(:mod:`distilvit.model.configuration`, :mod:`distilvit.model.reduction`), so the CLI and the model cannot
disagree, and ``distilvit --version``/``--help`` stay fast (no deep-learning imports before parsing).
"""

from __future__ import annotations

#: vision-to-LM projections (``--projection-type``)
PROJECTION_TYPES = ("linear", "mlp")
#: prefix token reductions (``--prefix-reduction``; see :mod:`distilvit.model.reduction`)
PREFIX_REDUCTIONS = ("none", "pool2", "shuffle2", "pool4")
#: what ``distilvit train`` uses unless told otherwise (chosen by measurement: docs/speed.md)
DEFAULT_PREFIX_REDUCTION = "shuffle2"
