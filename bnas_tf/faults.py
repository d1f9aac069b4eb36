"""Faults during a run: signals, non-finite losses, full disks, interruption checkpoints.

A search or a training is a loop of epochs, each one ``fit`` call followed by a
per-epoch checkpoint (``tf.train.CheckpointManager``, written then committed, so a
killed run always has a last complete checkpoint). ``RunGuard`` adds, around
that loop:

* **SIGINT / SIGTERM**: the current step finishes, the state *at that step* is
  written to ``checkpoints/interrupted-<epoch>-<step>`` (with
  ``checkpoints/interrupted.json`` pointing at it, written last), and
  ``Interrupted`` is raised. ``--resume`` restores it, skips the batches the
  epoch had already seen and carries on, so the run ends exactly where an
  uninterrupted one does (the epoch's metrics included). A second signal abandons
  the step at once (``KeyboardInterrupt``); the last complete checkpoint stays.
* **a non-finite loss** (any ``*loss`` log): training stops after that step and
  ``NonFiniteLoss`` names the epoch and step; nothing is written, so the last
  good checkpoint and every earlier output stay as they were.
* **disk space**: ``RunGuard.__enter__`` refuses to start when the output
  directory's file system cannot hold the checkpoints (``check_free_space``).

The programs turn these exceptions into a message and a non-zero exit
(``reported_faults``): 128 + the signal number after a signal, 1 otherwise.

Example (an outline, not run: it needs a run's objects):

```python
guard = RunGuard(checkpoint, output_dir, steps_per_epoch=steps, model=model)
if resume:
    guard.restore(manager)
with guard:
    for epoch in range(guard.start_epoch, epochs):
        data, callbacks = guard.epoch(epoch, make_data(epoch))
        model.fit(data, initial_epoch=epoch, epochs=epoch + 1, callbacks=callbacks)
        guard.check(epoch)          # raises NonFiniteLoss / Interrupted
        manager.save(checkpoint_number=epoch + 1)
        guard.committed(epoch)      # drops the interruption checkpoint
```
"""

from __future__ import annotations

from bnas_tf.runs import read_json, write_json

import contextlib
import errno
import math
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

__all__ = [
    "Interrupted",
    "NonFiniteLoss",
    "RunGuard",
    "INTERRUPTION_FILE",
    "check_free_space",
    "checkpoint_bytes",
    "reported_faults",
    "resume_command",
]

INTERRUPTION_FILE = "interrupted.json"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Write errors that mean "this directory cannot take the file", by errno and by the
# strerror text TensorFlow's C++ file system puts in its messages.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_WRITE_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    "Read-only file system",
    "Permission denied",
)


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after writing a checkpoint it can resume from."""

    def __init__(self, message: str, signum: int, checkpoint: str | None):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; nothing was written after the last good checkpoint."""

    def __init__(self, message: str, epoch: int, step: int):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


def checkpoint_bytes(variables: Sequence[tf.Variable], *, slots: int = 2) -> int:
    """Bytes of one checkpoint of ``variables`` with up to ``slots`` optimizer slots each."""
    size = sum(int(v.shape.num_elements() or 0) * v.dtype.size for v in variables)
    return size * (1 + slots)


def check_free_space(directory: str | os.PathLike, need: int, *, what: str = "this run") -> None:
    """Raise ``OSError(ENOSPC)`` unless ``directory``'s file system has ``need`` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"--output_dir {directory}: only {free / 2**20:.1f} MiB free, but {what} needs about "
            f"{need / 2**20:.1f} MiB for its checkpoints and outputs; free some space or choose "
            "another --output_dir",
        )


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _StepGuard(tf.keras.callbacks.Callback):
    """Per step: stop on a signal or a non-finite loss; after a resume, restore the metrics."""

    def __init__(self, guard: RunGuard, epoch: int, first_step: int, metrics: dict | None):
        super().__init__()
        self.guard, self.epoch, self.first_step, self.metrics = guard, epoch, first_step, metrics
        self._train_results: dict | None = None  # the epoch's training metrics, last step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch  # a fit may run several epochs (a reduction stage)

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1  # steps of this epoch done
        if batch == 0 and self.metrics:
            # Keras reset the epoch's metrics; add back the sums of the steps done before
            # the interruption (x + S == S + x, so the sums are those of an unbroken epoch).
            for metric in self.model.metrics:
                for variable, value in zip(metric.variables, self.metrics.get(metric.name, ())):
                    variable.assign_add(value)
        for key, value in (logs or {}).items():
            if "loss" in key and not math.isfinite(float(value)):
                self.guard._bad = (self.epoch, step, key, float(value))
                self.model.stop_training = True
                return
        self.guard._steps_done = step
        if self.metrics:  # the training metrics now, before fit's validation resets them
            self._train_results = {m.name: float(m.result()) for m in self.model.metrics}
        if self.guard.signum is not None:
            self.model.stop_training = True
            self.guard._stopped_early = batch + 1 < (self.params or {}).get("steps", batch + 1)
            # The sums to resume from, taken now: fit still validates after a stop, and
            # its evaluation resets the metrics.
            self.guard._metric_state = {
                m.name: [float(v.numpy()) for v in m.variables] for m in self.model.metrics
            }

    def on_epoch_end(self, epoch, logs=None):
        # (Not m.result() here: with validation_data, fit has evaluated by now, and the
        # metrics hold the validation's results.)
        if self.metrics and logs is not None and self._train_results:
            logs.update(self._train_results)


class RunGuard:
    """Signals, non-finite losses and interruption checkpoints around an epoch loop.

    Args:
        checkpoint: the run's ``tf.train.Checkpoint`` (model and optimizers); ``None``
            for loops whose unit of resumption is larger than an epoch (a stopped
            epoch is then abandoned and the last complete checkpoint kept).
        directory: the run's output directory (checkpoints go to ``checkpoints/``).
        steps_per_epoch: batches per epoch, for the global step in messages.
        model: the model trained (its metrics are saved in an interruption checkpoint,
            its size is checked against the free disk space).
        check_space: refuse to start when the output directory's file system cannot
            hold ``keep`` checkpoints, one being written and the weights file.
        keep: checkpoints the run keeps.
        program: the program's name in messages.
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint | None,
        directory: str | os.PathLike,
        *,
        steps_per_epoch: int,
        model: tf.keras.Model | None = None,
        check_space: bool = True,
        keep: int = 2,
        program: str = "the run",
    ):
        self.checkpoint = checkpoint
        self.directory = Path(directory)
        self.checkpoint_dir = self.directory / "checkpoints"
        self.steps_per_epoch = steps_per_epoch
        self.model = model
        self.check_space = check_space
        self.keep = keep
        self.program = program
        self.signum: int | None = None
        self.start_epoch = 0
        self._skip = 0
        self._metrics: dict | None = None
        self._metric_state: dict | None = None  # metric sums at the step a signal stopped
        self._bad: tuple | None = None
        self._steps_done = 0
        self._stopped_early = False
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ context
    def __enter__(self) -> RunGuard:
        if self.check_space and self.model is not None:
            need = checkpoint_bytes(self.model.variables) * (self.keep + 1) + checkpoint_bytes(
                self.model.variables, slots=0
            )
            check_free_space(self.directory, need, what=self.program)
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(
                f"second {_name(signum)}: abandoning the current step; the last complete "
                "checkpoint is kept"
            )
        self.signum = signum
        print(
            f"{self.program}: {_name(signum)} received; stopping after the current step to write "
            "a checkpoint (send it again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    # ------------------------------------------------------------------ resume
    def _interruption(self) -> dict | None:
        path = self.checkpoint_dir / INTERRUPTION_FILE
        return read_json(path) if path.exists() else None

    def restore(self, manager: tf.train.CheckpointManager):
        """Restore the newest state: an interruption checkpoint inside the epoch after
        ``manager``'s latest, else that latest checkpoint. Sets ``start_epoch``;
        returns the restore status (``None`` when there is nothing to restore)."""
        latest = manager.latest_checkpoint
        done = int(latest.rsplit("-", 1)[-1]) if latest else 0
        state = self._interruption() if self.checkpoint is not None else None
        prefix = str(self.checkpoint_dir / state["checkpoint"]) if state else None
        self.start_epoch = done
        if state and state["epoch"] == done and os.path.exists(prefix + ".index"):
            self._skip, self._metrics = int(state["step"]), state["metrics"]
            return self.checkpoint.restore(prefix)
        return self.checkpoint.restore(latest) if latest else None

    def epoch(self, epoch: int, dataset: tf.data.Dataset) -> tuple[tf.data.Dataset, list]:
        """``dataset`` without the batches already trained on, and the guard's callbacks
        (put them first, so that later callbacks see the repaired epoch logs)."""
        skip = self._skip if epoch == self.start_epoch else 0
        metrics = self._metrics if skip else None
        self._bad, self._steps_done, self._stopped_early = None, skip, False
        return (dataset.skip(skip) if skip else dataset), [_StepGuard(self, epoch, skip, metrics)]

    # ------------------------------------------------------------------ after fit
    def _where(self, epoch: int, step: int) -> str:
        return f"epoch {epoch + 1}, step {step} (global step {epoch * self.steps_per_epoch + step})"

    def check(self, epoch: int) -> None:
        """Call after each ``fit``: raise ``NonFiniteLoss`` or, after a signal that
        stopped the epoch early, write the interruption checkpoint and raise
        ``Interrupted``. Returns normally when the epoch is complete."""
        if self._bad is not None:
            bad_epoch, step, key, value = self._bad
            latest = (
                tf.train.latest_checkpoint(str(self.checkpoint_dir)) if self.checkpoint else None
            )
            kept = (
                f"the last good checkpoint {latest} is kept"
                if latest
                else "the last complete checkpoint is kept"
                if self.checkpoint is None
                else "no checkpoint had been written yet"
            )
            raise NonFiniteLoss(
                f"{self.program}: {key} became {value} at {self._where(bad_epoch, step)}; stopped "
                f"without writing anything: {kept}. Lower --learning_rate (or clip gradients) and "
                "resume with --resume.",
                bad_epoch,
                step,
            )
        if self.signum is None:
            return
        step = self._steps_done
        if self.checkpoint is None:  # the unit of resumption is larger than this fit
            raise Interrupted(
                f"{self.program} stopped by {_name(self.signum)} at {self._where(epoch, step)}; "
                "the unfinished part is abandoned and the last complete checkpoint is kept.",
                self.signum,
                None,
            )
        if not self._stopped_early:
            return  # the epoch was complete: committed() stops the run after saving it
        name = f"interrupted-{epoch}-{step}"
        old = self._interruption()
        self.checkpoint.write(str(self.checkpoint_dir / name))  # files first, then the pointer
        metrics = self._metric_state
        write_json(
            self.checkpoint_dir / INTERRUPTION_FILE,
            {
                "epoch": epoch,
                "step": step,
                "checkpoint": name,
                "metrics": metrics,
                "signal": _name(self.signum),
            },
        )
        if old and old["checkpoint"] != name:
            self._remove(old["checkpoint"])
        raise Interrupted(
            f"{self.program} stopped by {_name(self.signum)} at {self._where(epoch, step)}; its "
            f"state is saved in {self.checkpoint_dir / name}.",
            self.signum,
            str(self.checkpoint_dir / name),
        )

    def committed(self, epoch: int) -> None:
        """Call after epoch ``epoch``'s checkpoint is saved: drop the interruption
        checkpoint; a signal that came after the epoch's last step stops the run here."""
        state = self._interruption()
        if state is not None:
            (self.checkpoint_dir / INTERRUPTION_FILE).unlink()
            self._remove(state["checkpoint"])
        if self.signum is not None:
            latest = tf.train.latest_checkpoint(str(self.checkpoint_dir))
            raise Interrupted(
                f"{self.program} stopped by {_name(self.signum)} after epoch {epoch + 1}; its "
                f"state is saved in {latest}.",
                self.signum,
                latest,
            )

    def _remove(self, name: str) -> None:
        for path in self.checkpoint_dir.glob(f"{name}.*"):
            path.unlink(missing_ok=True)


def resume_command(argv: Sequence[str], program: str) -> str:
    """The command line that resumes the run of ``argv`` (``--overwrite`` dropped)."""
    args = [a for a in argv[1:] if a.split("=")[0] not in ("--overwrite", "--resume", "--noresume")]
    return " ".join([program, *map(shlex.quote, args), "--resume"])


def _is_write_error(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        return True
    return isinstance(error, tf.errors.OpError) and any(t in str(error) for t in _WRITE_TEXTS)


@contextlib.contextmanager
def reported_faults(program: str, argv: Sequence[str] | None = None) -> Iterator[None]:
    """Turn run faults into a message on stderr and a non-zero exit (``SystemExit``).

    ``Interrupted`` exits with 128 + the signal number and prints the command that
    resumes; ``NonFiniteLoss`` and write errors (disk full, read-only) exit with 1.
    """
    argv = sys.argv if argv is None else argv
    try:
        yield
    except Interrupted as error:
        print(
            f"{error}\nResume with:\n  {resume_command(argv, program)}", file=sys.stderr, flush=True
        )
        raise SystemExit(128 + error.signum) from None
    except KeyboardInterrupt as error:
        print(
            f"{program}: interrupted ({error or 'SIGINT'}); the last complete checkpoint is kept. "
            f"Resume with:\n  {resume_command(argv, program)}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(128 + signal.SIGINT) from None
    except NonFiniteLoss as error:
        print(str(error), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except (OSError, tf.errors.OpError) as error:
        if not _is_write_error(error):
            raise
        message = getattr(error, "message", None) or str(error)
        print(
            f"{program}: could not write its files: {message}.\nResults are written atomically, "
            "so no partial genotype.json, metrics.json or weights.h5 was left, and the last "
            "complete checkpoint is kept; make room and resume with:\n  "
            f"{resume_command(argv, program)}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None
