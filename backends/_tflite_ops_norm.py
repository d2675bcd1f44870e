"""TFLite lowering rules: normalizations and reductions (BatchNormalization, LRN, ...).

Rules follow docs/tflite.md "Adding a lowering". ``LOWERINGS`` is merged into the registry in
``_tflite_ops`` after the base rules (a key here replaces a base rule of the same op).
``INT8_OPS`` / ``SHARED_SCALE_OPS`` extend ``TFLITE_SPEC`` for ops lowered here with an int8
kernel (see ``backends/tflite.py``).
"""

from __future__ import annotations

LOWERINGS: dict = {}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
