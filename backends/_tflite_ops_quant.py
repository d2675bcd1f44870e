"""TFLite lowering rules: (being written; see the family list in ``_tflite_ops.FAMILIES``).

``LOWERINGS`` is merged into the registry in ``_tflite_ops`` after the base rules.
"""

from __future__ import annotations

LOWERINGS: dict = {}
INT8_OPS: frozenset[str] = frozenset()
SHARED_SCALE_OPS: frozenset[str] = frozenset()
