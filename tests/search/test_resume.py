"""A search killed mid-run and resumed ends where an uninterrupted one does."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--dataset=fashion_mnist", "--batch_size=8", "--epochs=3", "--layers=1", "--init_channels=4",
    "--entropy_tau=1.0", "--seed=3", "--verbose=0",
]


def _command(data_dir, output_dir, *extra):
    return [sys.executable, "-m", "bnas_tf.search", *ARGS, f"--data_dir={data_dir}", f"--output_dir={output_dir}", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_killed_search_resumes_to_the_same_result(tmp_path, tiny_idx_dir):
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _command(tiny_idx_dir, killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 400
    while not (killed / "checkpoints" / "checkpoint").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "genotype.json").exists(), "the killed run must not have finished"

    resumed = subprocess.run(_command(tiny_idx_dir, killed, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run(_command(tiny_idx_dir, tmp_path / "straight"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]

    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert len(a["history"]) == len(b["history"]) == 3
    assert a["genotype"] == b["genotype"]
    np.testing.assert_allclose(a["alpha_reduce"], b["alpha_reduce"], rtol=0, atol=1e-6)
    assert [r["genotype"] for r in a["history"]] == [r["genotype"] for r in b["history"]]
