"""Memory levers for CPU runs: glibc's malloc arenas, and activations recomputed in the
backward pass.

TensorFlow's CPU allocator is ``malloc``. glibc gives threads their own malloc arenas
(up to ``8 x cores`` of them); a tensor freed by a thread returns to the arena it was
allocated from, and memory freed in one arena cannot serve an allocation in another.
A search step allocates and frees gigabytes of activations from TensorFlow's thread
pools, so the process's peak resident memory grows above what the step needs at once.
Capping the arenas (``mallopt(M_ARENA_MAX, n)``, the same as the environment variable
``MALLOC_ARENA_MAX=n``) brings it down without slowing the step: measured on the
reference search step (8 cells x 16 channels, batch 64), peak RSS 3.72 -> 3.59 GB with
``mixed_bfloat16`` and 5.08 -> 4.96 GB in float32, at the same s/step, side by side in one
run (``benchmarks/results/search_speed_arenas.md``).

A network's training step keeps every activation its backward pass reads; wrapping a block
in [`recompute_grad`][bnas_tf.memory.recompute_grad] keeps only the block's inputs and computes
its activations again in the backward pass (Chen et al., "Training deep nets with sublinear
memory cost", 2016): less memory, one more forward of the block per step.

Example:

```python
from bnas_tf.memory import limit_malloc_arenas
limit_malloc_arenas(2)  # before the first TensorFlow op runs
```
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

__all__ = ["M_ARENA_MAX", "limit_malloc_arenas", "recompute_grad"]

M_ARENA_MAX = -8  # glibc <malloc.h>


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for this process.

    Arenas created before the call stay; call it before TensorFlow's thread pools
    start (before the first op runs). ``0`` leaves glibc's default. Returns whether
    the cap was set (``False`` where the C library is not glibc).
    """
    if isinstance(arenas, bool) or not isinstance(arenas, int) or arenas < 0:
        raise ValueError(
            f"malloc arenas must be a non-negative integer (0: glibc's default), got {arenas!r}."
        )
    if arenas == 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def _batch_norms(module: Any) -> list:
    return [m for m in module.submodules if hasattr(m, "moving_mean") and hasattr(m, "momentum")]


def recompute_grad(fn: Callable, module: Any) -> Callable:
    """``fn`` under ``tf.recompute_grad``, the batch normalization of ``module`` updating its
    moving statistics once per step.

    ``fn`` runs ``module`` (a Keras layer); the backward pass runs it a second time. That second
    run must not move the statistics again: with momentum ``m``, two updates from the same batch
    statistics ``x`` would give ``m^2 v + (1 - m^2) x`` instead of ``m v + (1 - m) x``. Every
    call of ``fn`` after the first one of the returned function is a recomputation, so during it
    each batch normalization layer of ``module`` has momentum 1 (``v <- 1 v + 0 x``) and the
    update is a no-op. Make the function once per trace (in the ``call`` that uses it).

    Example:
        ```python
        s1 = recompute_grad(lambda a, b: cell(a, b, training=True), cell)(s0, s1)
        ```
    """
    import tensorflow as tf  # not at import: limit_malloc_arenas comes before TensorFlow

    norms = _batch_norms(module)
    calls = 0

    def counted(*args):
        nonlocal calls
        calls += 1
        if calls == 1:
            return fn(*args)
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.momentum = 1.0
        try:
            return fn(*args)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum

    return tf.recompute_grad(counted)
