"""Keras dtype policies of the networks: float32, or bfloat16 compute with float32 state.

``mixed_bfloat16`` runs activations and convolutions in bfloat16 and keeps every
variable (weights, BN statistics, the search's alpha), the classifier's logits and the
loss in float32. It pays where bfloat16 is native (CPUs with AVX512-BF16 or AMX, TPUs,
recent GPUs); elsewhere TensorFlow emulates it and it is slower than float32.

```python
from bnas_tf.precision import policy_scope

with policy_scope("mixed_bfloat16"):
    conv = tf.keras.layers.Conv2D(8, 3)   # computes in bfloat16, kernel in float32
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

__all__ = ["DTYPE_POLICIES", "check_dtype_policy", "policy_scope"]

#: The dtype policies a supernet or a final network can be built with.
DTYPE_POLICIES = ("float32", "mixed_bfloat16")


def check_dtype_policy(policy: str, name: str = "dtype_policy") -> str:
    """``policy`` if it is one of ``DTYPE_POLICIES``.

    Raises:
        ValueError: naming ``name`` and the policies allowed.

    Example:
        >>> check_dtype_policy("float16")
        Traceback (most recent call last):
        ...
        ValueError: dtype_policy must be one of float32, mixed_bfloat16, got 'float16'.
    """
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"{name} must be one of {', '.join(DTYPE_POLICIES)}, got {policy!r}.")
    return policy


@contextlib.contextmanager
def policy_scope(policy: str) -> Iterator[None]:
    """Build layers under the Keras global dtype policy ``policy``, then restore the old one."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(check_dtype_policy(policy))
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
