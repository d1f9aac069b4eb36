"""Run one bnas-tf program on many command lines in one process (a test helper).

    python tests/reliability/programs.py bnas_tf.apps.train cases.json results.json

Each case is ``{"args": [...], "fsize": bytes or null}``; the program's real ``main``
runs through ``absl.app.run`` with that command line (flags reset in between), so its
flag parsing, validation and exit status are the program's own. ``fsize`` limits the
size of any file written during the case (``RLIMIT_FSIZE``, SIGXFSZ ignored): with 0,
every write fails, as on a full disk. One process for all cases saves a TensorFlow
import per case. The results are ``{"code", "out", "err"}`` per case, ``code`` being
the exit status the program's process would have had. With ``$BNAS_LOGICAL_CPUS`` set,
the CPU is split into that many logical devices first (replicas for ``--strategy``).
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import contextlib
import importlib
import io
import json
import os
import resource
import signal
import sys
import traceback

from absl import app, flags


@contextlib.contextmanager
def _file_size_limit(limit):
    if limit is None:
        yield
        return
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)


def _exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def main() -> None:
    module_name, cases_path, results_path = sys.argv[1:4]
    if os.environ.get("BNAS_LOGICAL_CPUS"):  # e.g. 2: --strategy=mirrored then has 2 replicas
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        count = int(os.environ["BNAS_LOGICAL_CPUS"])
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    module = importlib.import_module(module_name)
    module.define_flags()
    with open(cases_path) as f:
        cases = json.load(f)
    results = []
    for case in cases:
        flags.FLAGS.unparse_flags()
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with _file_size_limit(case.get("fsize")):
                try:
                    app.run(module.main, argv=[module_name, *case["args"]])
                except SystemExit as error:
                    code = _exit_code(error)
                    if isinstance(error.code, str):
                        err.write(error.code)
                except Exception:  # an uncaught error: the process would print it and exit 1
                    traceback.print_exc(file=err)
                    code = 1
        results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
