"""In-process pieces of the guarantees: atomic writes under a real write failure, the
free-space check, the signal handlers of a run (a real signal to this process), and how
the programs report faults."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import faults
from bnas_tf.runs import atomic_path, write_json

import contextlib
import errno
import json
import os
import resource
import shutil
import signal

import pytest


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files of this process may not grow beyond ``limit`` bytes (EFBIG, as a full disk)."""
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"accuracy": 0.9})
    before = path.read_bytes()
    with file_size_limit(64), pytest.raises(OSError) as error:
        write_json(path, {"history": list(range(1000))})
    assert error.value.errno == errno.EFBIG
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_path_replaces_only_after_a_complete_write(tmp_path):
    target = tmp_path / "weights.h5"
    target.write_bytes(b"old weights")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".h5" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.h5"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new weights")
    assert target.read_bytes() == b"new weights"


def test_free_space_is_checked_before_a_run(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    faults.check_free_space(tmp_path, 1024)
    with pytest.raises(
        OSError, match=f"--output_dir {tmp_path}: only .* MiB free, but bnas-train needs"
    ) as error:
        faults.check_free_space(tmp_path, free * 2, what="bnas-train")
    assert error.value.errno == errno.ENOSPC


def test_signals_stop_at_a_step_and_handlers_are_restored(tmp_path):
    def previous(signum, frame):
        raise AssertionError("the run's handler should have caught it")

    old_int, old_term = (
        signal.signal(signal.SIGINT, previous),
        signal.signal(signal.SIGTERM, previous),
    )
    try:
        guard = faults.RunGuard(None, tmp_path, steps_per_epoch=4)
        with guard:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal: the run notes it and goes on
            assert guard.signum == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
                os.kill(os.getpid(), signal.SIGINT)  # a second one stops at once
        assert (
            signal.getsignal(signal.SIGINT) is previous
            and signal.getsignal(signal.SIGTERM) is previous
        )
        with pytest.raises(ZeroDivisionError), faults.RunGuard(None, tmp_path, steps_per_epoch=4):
            _ = 1 / 0
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _exit(error: BaseException, capsys) -> tuple[int, str]:
    argv = ["/x/bnas_tf/train.py", "--epochs=3", "--output_dir=runs/a b", "--overwrite"]
    with pytest.raises(SystemExit) as stop, faults.reported_faults("bnas-train", argv):
        raise error
    return stop.value.code, capsys.readouterr().err


def test_programs_report_faults_with_an_exit_status_and_the_resume_command(capsys):
    code, err = _exit(
        faults.Interrupted("bnas-train stopped by SIGTERM", signal.SIGTERM, "ckpt"), capsys
    )
    assert code == 143 and "bnas-train --epochs=3 '--output_dir=runs/a b' --resume" in err
    assert "--overwrite" not in err
    code, err = _exit(faults.NonFiniteLoss("loss became nan at epoch 1, step 2", 0, 2), capsys)
    assert code == 1 and "loss became nan at epoch 1, step 2" in err
    code, err = _exit(OSError(errno.ENOSPC, "No space left on device"), capsys)
    assert code == 1 and "No space left on device" in err and "no partial genotype.json" in err
    with pytest.raises(FileNotFoundError), faults.reported_faults("bnas-train", []):
        raise FileNotFoundError(errno.ENOENT, "a bug, not a full disk")


def test_an_interruption_checkpoint_is_used_only_inside_the_next_epoch(tmp_path):
    """A stale interruption record (older than the last epoch checkpoint) is ignored."""
    import tensorflow as tf

    step = tf.Variable(0)
    checkpoint = tf.train.Checkpoint(step=step)
    manager = tf.train.CheckpointManager(checkpoint, tmp_path / "checkpoints", max_to_keep=2)
    step.assign(4)
    manager.save(checkpoint_number=1)
    step.assign(6)
    checkpoint.write(str(tmp_path / "checkpoints" / "interrupted-1-2"))
    record = {"epoch": 1, "step": 2, "checkpoint": "interrupted-1-2", "metrics": {}}
    (tmp_path / "checkpoints" / faults.INTERRUPTION_FILE).write_text(json.dumps(record))
    guard = faults.RunGuard(checkpoint, tmp_path, steps_per_epoch=4)
    guard.restore(manager)
    assert (guard.start_epoch, guard._skip, int(step.numpy())) == (1, 2, 6)
    step.assign(8)
    manager.save(checkpoint_number=2)
    guard = faults.RunGuard(checkpoint, tmp_path, steps_per_epoch=4)
    guard.restore(manager)
    assert (guard.start_epoch, guard._skip, int(step.numpy())) == (2, 0, 8)
