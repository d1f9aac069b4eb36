"""Run a bnas-tf program with one injected fault (a test helper, not a test).

    BNAS_FAULT=sigterm@5 python tests/reliability/faulty.py bnas_tf.apps.train --epochs=2 ...

The fault is real (the process signals itself, or dies by SIGKILL); only the moment
is chosen, by ``N``, the weights optimizer's step count (a resumed run restores it):

``sigkill@N``  SIGKILL when step ``N + 1`` is about to start (a kill mid-epoch);
``sigterm@N``  SIGTERM at that moment (a graceful stop);
``commit@N``   SIGKILL while checkpoint ``ckpt-N`` is being saved: its files are
               written but ``checkpoints/checkpoint`` does not name it yet.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import os
import runpy
import signal
import sys

import tensorflow as tf


def _install(fault: str) -> None:
    kind, number = fault.split("@")
    number = int(number)
    if kind in ("sigkill", "sigterm"):
        signum = signal.SIGKILL if kind == "sigkill" else signal.SIGTERM

        class Fault(tf.keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if int(self.model.optimizer.iterations.numpy()) == number:
                    os.kill(os.getpid(), signum)

        fit = tf.keras.Model.fit

        def fit_with_fault(self, *args, callbacks=None, **kwargs):
            return fit(self, *args, callbacks=[*(callbacks or []), Fault()], **kwargs)

        tf.keras.Model.fit = fit_with_fault
    elif kind == "commit":
        from tensorflow.python.checkpoint import checkpoint_management

        manager = checkpoint_management.CheckpointManager
        record_state = manager._record_state

        def record_state_with_fault(self):
            if str(self._latest_checkpoint).endswith(f"-{number}"):
                os.kill(os.getpid(), signal.SIGKILL)
            record_state(self)

        manager._record_state = record_state_with_fault
    else:
        raise SystemExit(f"unknown BNAS_FAULT {fault!r}")


if __name__ == "__main__":
    if os.environ.get("BNAS_FAULT"):
        _install(os.environ["BNAS_FAULT"])
    module = sys.argv.pop(1)
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__", alter_sys=True)
