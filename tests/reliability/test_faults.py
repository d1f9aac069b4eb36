"""Faults during a run, as real processes: SIGKILL, SIGTERM, a NaN loss, a full disk.

For each program one run is broken again and again, and resumed each time:

1. (training) SIGKILL in the middle of epoch 2, after ``ckpt-1``;
2. SIGKILL while ``ckpt-2`` is being saved: its files are written but the checkpoint
   index does not name it yet, and the state JSON (written before the checkpoint)
   already holds epoch 2. This leaves a superset of what a mid-epoch kill leaves, and
   the resume replays epoch 2 from ``ckpt-1`` the same way, so the search (whose runs
   cost twice as much) is broken here first and skips step 1;
3. ``--resume``, then SIGTERM in the middle of epoch 2: a graceful stop;
4. ``--resume`` to the end, which must equal an uninterrupted run bit for bit.

The uninterrupted run is then resumed for more epochs with a learning rate that makes
the loss NaN. The runs go in two parallel lanes, to keep within the suite's budget.
Steps are counted by the weights optimizer; 4 steps make an epoch in both programs.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import json
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from reliability_helpers import TINY_SEARCH, TINY_TRAIN, run_program, snapshot

PROGRAMS = {
    "search": ("bnas_tf.apps.search", TINY_SEARCH),
    "train": ("bnas_tf.apps.train", TINY_TRAIN),
}
FAULTS = {
    "search": [("commit", "commit@2"), ("sigterm", "sigterm@5")],
    "train": [("sigkill", "sigkill@5"), ("commit", "commit@2"), ("sigterm", "sigterm@5")],
}
DIVERGE = ["--epochs=3", "--learning_rate=1e38", "--resume"]


def _record(process: subprocess.CompletedProcess, directory: Path) -> dict:
    index = directory / "checkpoints" / "checkpoint"
    return {
        "code": process.returncode,
        "err": process.stderr[-6000:],
        "files": snapshot(directory),
        "index": index.read_text() if index.exists() else None,
    }


def _broken_run(program: str, root: Path, data: Path) -> dict:
    module, args = PROGRAMS[program]
    run_dir = root / f"{program}_broken"
    common = [*args, f"--data_dir={data}", f"--output_dir={run_dir}"]
    records = {}
    for index, (name, fault) in enumerate(FAULTS[program]):
        resume = ["--resume"] if index else []
        records[name] = _record(run_program(module, *common, *resume, fault=fault), run_dir)
    records["resumed"] = _record(run_program(module, *common, "--resume"), run_dir)
    return records


def _straight_then_nan(program: str, root: Path, data: Path) -> dict:
    module, args = PROGRAMS[program]
    run_dir, nan_dir = root / f"{program}_straight", root / f"{program}_nan"
    records = {
        "straight": _record(
            run_program(module, *args, f"--data_dir={data}", f"--output_dir={run_dir}"), run_dir
        )
    }
    shutil.copytree(run_dir, nan_dir)
    records["nan_before"] = {"files": snapshot(nan_dir)}
    nan = run_program(module, *args, f"--data_dir={data}", f"--output_dir={nan_dir}", *DIVERGE)
    records["nan"] = _record(nan, nan_dir)
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_idx_dir_module):
    """Every run of this module, in two lanes of about equal length."""
    root = tmp_path_factory.mktemp("faults")
    data = tiny_idx_dir_module

    def lane_a():
        return {
            "search": _broken_run("search", root, data),
            "train": _straight_then_nan("train", root, data),
        }

    def lane_b():
        return {
            "search": _straight_then_nan("search", root, data),
            "train": _broken_run("train", root, data),
        }

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.submit(lane_a), pool.submit(lane_b)
        a, b = a.result(), b.result()
    results = {program: {**a[program], **b[program]} for program in PROGRAMS}
    results["root"] = root
    return results


def _messages(record: dict) -> str:
    return f"exit {record['code']}:\n{record['err']}"


@pytest.mark.parametrize("program", ["train"])
def test_sigkill_mid_epoch_leaves_the_last_complete_checkpoint(runs, program):
    killed = runs[program]["sigkill"]
    assert killed["code"] == -signal.SIGKILL, _messages(killed)
    files = killed["files"]
    assert {"checkpoints/ckpt-1.index", "checkpoints/checkpoint"} <= set(files)
    assert not any(name.startswith("checkpoints/ckpt-2") for name in files)
    for output in ("genotype.json", "metrics.json", "weights.h5"):
        assert output not in files
    assert not any(".tmp" in name for name in files), files  # no half-written file


@pytest.mark.parametrize("program", ["search", "train"])
def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one(runs, program):
    killed = runs[program]["commit"]
    assert killed["code"] == -signal.SIGKILL, _messages(killed)
    files = killed["files"]
    # ckpt-2's files were written, but the index still names ckpt-1: resume takes ckpt-1,
    # and the state file (written before the checkpoint) holds one epoch more, ignored.
    assert "checkpoints/ckpt-2.index" in files
    assert 'model_checkpoint_path: "ckpt-1"' in killed["index"] and "ckpt-2" not in killed["index"]
    assert (
        "genotype.json" not in files and "metrics.json" not in files and "weights.h5" not in files
    )


@pytest.mark.parametrize("program", ["search", "train"])
def test_sigterm_stops_at_a_step_writes_a_checkpoint_and_says_how_to_resume(runs, program):
    stopped = runs[program]["sigterm"]
    assert stopped["code"] == 128 + signal.SIGTERM, _messages(stopped)
    err = stopped["err"]
    assert "stopped by SIGTERM at epoch 2, step 2 (global step 6)" in err
    assert f"bnas-{program} " in err and "--resume" in err.split("Resume with:")[1]
    files = stopped["files"]
    assert {"checkpoints/interrupted-1-2.index", "checkpoints/interrupted.json"} <= set(files)
    assert (
        "genotype.json" not in files and "metrics.json" not in files and "weights.h5" not in files
    )


@pytest.mark.parametrize("program", ["search", "train"])
def test_resumed_run_equals_an_uninterrupted_one(runs, program):
    resumed, straight = runs[program]["resumed"], runs[program]["straight"]
    assert resumed["code"] == 0, _messages(resumed)
    assert straight["code"] == 0, _messages(straight)
    # dropped once epoch 2 was saved
    assert not any("interrupted" in name for name in resumed["files"])
    a = json.loads((runs["root"] / f"{program}_broken" / "metrics.json").read_text())
    b = json.loads((runs["root"] / f"{program}_straight" / "metrics.json").read_text())
    assert a["history"] == b["history"]  # every epoch's losses and accuracies, to the bit
    if program == "search":
        assert a["genotype"] == b["genotype"] and a["best_epoch"] == b["best_epoch"]
        assert a["alpha_normal"] == b["alpha_normal"] and a["alpha_reduce"] == b["alpha_reduce"]
        broken, whole = (
            runs["root"] / f"search_{name}" / "genotype.json" for name in ("broken", "straight")
        )
        assert broken.read_bytes() == whole.read_bytes()
    else:
        assert (
            a["test"]["accuracy"] == b["test"]["accuracy"]
            and a["test"]["loss"] == b["test"]["loss"]
        )
        with (
            h5py.File(runs["root"] / "train_broken" / "weights.h5") as x,
            h5py.File(runs["root"] / "train_straight" / "weights.h5") as y,
        ):
            names = []
            x.visititems(
                lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
            )
            assert names
            for name in names:
                np.testing.assert_array_equal(x[name][()], y[name][()], err_msg=name)


@pytest.mark.parametrize("program", ["search", "train"])
def test_nan_loss_stops_naming_the_step_and_overwrites_nothing(runs, program):
    nan, before = runs[program]["nan"], runs[program]["nan_before"]
    assert nan["code"] == 1, _messages(nan)
    assert (
        "loss became nan at epoch 3, step " in nan["err"]
        or "loss became inf at epoch 3, step " in nan["err"]
    ), nan["err"]
    assert "global step" in nan["err"] and "checkpoints/ckpt-2 is kept" in nan["err"]
    # Every file of the finished run is as it was: checkpoints, state, genotype, metrics,
    # weights (TensorBoard logs and network.json aside).
    kept = {k: v for k, v in before["files"].items() if not k.startswith("tensorboard/")}
    after = {k: v for k, v in nan["files"].items() if k in kept}
    assert after == kept
    new = set(nan["files"]) - set(before["files"])
    assert all(name.startswith("tensorboard/") for name in new), new
