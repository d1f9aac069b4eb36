"""A program's start-up: TensorFlow imported quietly, ``--help`` that lists the program's flags.

TensorFlow's C++ start-up messages (CUDA probing on a machine without a GPU, the CPU
feature notice, oneDNN's notice) are printed before its logging is configured, so
``TF_CPP_MIN_LOG_LEVEL`` cannot hide all of them (tensorflow/tensorflow#100442). A
program therefore imports TensorFlow and probes its devices with file descriptor 2
captured, drops the lines below that are known start-up notices, and writes every
other line back to stderr:

```sh
bnas-search --flagfile=flags/demo_search.cfg --output_dir=runs/s      # quiet
TF_CPP_MIN_LOG_LEVEL=0 bnas-search ...                                # everything
```

Nothing is filtered when the user set ``TF_CPP_MIN_LOG_LEVEL``; otherwise the level
is ``1`` (warnings and errors), and TensorFlow's Python modules log warnings and above
(through its ``tensorflow`` logger or through absl).
Only the programs (``bnas_tf.apps``) do this; ``import bnas_tf`` changes no logging.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable

__all__ = [
    "LOGGING_HELP",
    "STARTUP_NOISE",
    "quiet_tensorflow_import",
    "startup_noise_filter",
    "run_program",
]

#: Appended to every program's ``--help``.
LOGGING_HELP = (
    "TensorFlow's start-up notices and INFO logs are hidden; to see everything TensorFlow "
    "logs, set the environment variable TF_CPP_MIN_LOG_LEVEL=0."
)

#: Start-up lines of TensorFlow that say nothing about the run (matched anywhere in a line).
STARTUP_NOISE = re.compile(
    "|".join(
        (
            r"All log messages before absl::InitializeLog\(\) is called",
            r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
            r"cuda_platform\.cc:\d+\] failed call to cuInit",
            r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
            r"^To enable the following instructions: .* rebuild TensorFlow",
            r"oneDNN custom operations are on",
            r"Unable to register cu(DNN|FFT|BLAS) factory",
            r"TF-TRT Warning: Could not find TensorRT",
        )
    )
)


def startup_noise_filter(lines: Iterable[str]) -> list[str]:
    """The lines of ``lines`` that are not TensorFlow start-up notices (``STARTUP_NOISE``).

    Example:
        >>> startup_noise_filter([
        ...     "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...",
        ...     "W0000 some_op.cc:10] a real warning",
        ... ])
        ['W0000 some_op.cc:10] a real warning']
    """
    return [line for line in lines if not STARTUP_NOISE.search(line)]


def quiet_tensorflow_import(environ=os.environ) -> bool:
    """Import TensorFlow and probe its devices with the start-up notices filtered out.

    Returns:
        ``True`` if it filtered; ``False`` when ``TF_CPP_MIN_LOG_LEVEL`` was set by the
        user or TensorFlow was already imported (then nothing is changed or captured).
    """
    if "TF_CPP_MIN_LOG_LEVEL" in environ or "tensorflow" in sys.modules:
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = "1"  # bnas_tf (the parent package) chose Keras 2 already
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) runs here, not at import
            logging.getLogger("tensorflow").setLevel(logging.WARNING)
            _hide_tensorflow_info_in_absl_logs(os.path.dirname(tf.__file__))
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = startup_noise_filter(capture.read().decode(errors="replace").splitlines())
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
    return True


def _hide_tensorflow_info_in_absl_logs(tensorflow_dir: str) -> None:
    """Drop INFO records that TensorFlow's own modules log through absl (e.g. its saver's)."""
    from absl import logging as absl_logging

    prefix = os.path.join(os.path.realpath(tensorflow_dir), "")

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not os.path.realpath(
            record.pathname
        ).startswith(prefix)

    absl_logging.get_absl_handler().addFilter(keep)


def run_program(main: Callable, doc: str, flag_values=None) -> None:
    """``absl.app.run(main)``; ``--help`` shows ``doc``, the flags and ``LOGGING_HELP``.

    absl's short help lists the flags of the ``__main__`` module only; a console script's
    ``__main__`` defines none, so the flags that bnas_tf's modules defined are declared key
    flags of the main module.
    """
    from absl import app, flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    main_name = sys.argv[0]
    for module, module_flags in flag_values.flags_by_module_dict().items():
        if module.startswith("bnas_tf") and module != main_name:
            for flag in module_flags:
                flag_values.register_key_flag_for_module(main_name, flag)
    sys.modules["__main__"].__doc__ = f"{doc.rstrip()}\n\n{LOGGING_HELP}\n"
    app.run(main)
