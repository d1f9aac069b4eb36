"""bnas-tf: binarized neural architecture search on TensorFlow, Keras 2 and Larq.

Larq is built on Keras 2, so the package selects TensorFlow's legacy Keras
(``tf_keras``) before TensorFlow is imported for the first time:

```python
import bnas_tf            # sets TF_USE_LEGACY_KERAS=1, then imports TensorFlow
import tensorflow as tf   # tf.keras is now Keras 2 (tf_keras)
```

``bnas_tf.summary(model)`` prints ``larq.models.summary`` of any network (searched,
trained or from the zoo) and returns its figures: 1-bit and 32-bit parameters, memory,
binarized MAC ratio ([`bnas_tf.export.model_summary`][bnas_tf.export.model_summary]).

If TensorFlow was imported earlier with Keras 3, importing ``bnas_tf`` fails with
an ``ImportError`` that says how to fix it.

On x86-64 Linux it also turns on TensorFlow's oneDNN CPU kernels
(``TF_ENABLE_ONEDNN_OPTS=1``) unless the variable is already set: TensorFlow enables them by
default only on CPUs with AVX512 VNNI, BF16 or AMX, and on an AVX2-only CPU (AMD EPYC Zen 3,
2 cores) they train the demo network 1.58x and BNAS-A 1.54x faster than TensorFlow's Eigen
kernels (``docs/benchmarks.md``). ``TF_ENABLE_ONEDNN_OPTS=0`` keeps the Eigen kernels
(results then differ in float rounding, as they do between CPUs).
"""

import os
import platform
import sys

__version__ = "0.1.0"


def _select_legacy_keras() -> None:
    """Make ``tf.keras`` resolve to Keras 2 (``tf_keras``), which larq requires."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        return
    import tensorflow as tf  # already imported: only inspect it

    if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        version = getattr(sys.modules.get("keras"), "__version__", "3")
        raise ImportError(
            "bnas_tf needs Keras 2 (tf_keras), but TensorFlow was already imported with "
            f"Keras {version}. Set the environment variable TF_USE_LEGACY_KERAS=1 "
            "before TensorFlow is imported (e.g. `export TF_USE_LEGACY_KERAS=1`), or "
            "import bnas_tf before tensorflow."
        )


def _one_intra_op_thread() -> bool:
    """Whether TensorFlow will run one intra-op thread: ``TF_NUM_INTRAOP_THREADS=1``, or
    (that variable unset or 0) a process allowed on one CPU only."""
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if threads not in ("", "0"):
        return threads == "1"
    try:
        return len(os.sched_getaffinity(0)) == 1
    except (AttributeError, OSError):
        return os.cpu_count() == 1


def _select_onednn() -> None:
    """Turn on oneDNN's CPU kernels on x86-64 Linux unless ``TF_ENABLE_ONEDNN_OPTS`` is set,
    or TensorFlow will run one intra-op thread: there TensorFlow 2.21's oneDNN kernels corrupt
    the heap in the backward pass of DARTS' factorized reduce (a 1x1 stride-2 convolution,
    pad, concat, batch norm), which the DARTS space and template use (docs/reliability.md)."""
    if "tensorflow" in sys.modules or sys.platform != "linux":
        return
    if platform.machine().lower() in ("x86_64", "amd64") and not _one_intra_op_thread():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


_select_legacy_keras()
_select_onednn()


def __getattr__(name: str):
    # ``bnas_tf.summary(model)``, imported on first use so that ``import bnas_tf`` stays
    # light (TensorFlow is imported by the submodules, never here).
    if name == "summary":
        from bnas_tf.export import summary

        return summary
    raise AttributeError(f"module 'bnas_tf' has no attribute {name!r}")


__all__ = ["__version__", "summary"]
