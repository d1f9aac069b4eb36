"""Process memory settings for CPU runs: glibc's malloc arenas.

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

Example:

```python
from bnas_tf.memory import limit_malloc_arenas
limit_malloc_arenas(2)  # before the first TensorFlow op runs
```
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["M_ARENA_MAX", "limit_malloc_arenas"]

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
