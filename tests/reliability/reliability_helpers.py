"""Helpers of the reliability suite: programs run as real processes, with real faults.

``run_program`` starts ``python -m <module>`` (or, with ``fault=``, the same program
under ``faulty.py``, which makes it signal or kill itself at a chosen step);
``run_cases`` runs many command lines of one program in one process (``programs.py``);
``snapshot`` records every file of a directory by content, to show what a failed run
left and that nothing was overwritten.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import ctypes
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

TINY_SEARCH = [
    "--dataset=fashion_mnist",
    "--batch_size=8",
    "--epochs=2",
    "--layers=1",
    "--init_channels=4",
    "--entropy_tau=1.0",
    "--seed=3",
    "--verbose=0",
]  # 64 images: two halves of 32, 4 steps an epoch
TINY_TRAIN = [
    "--dataset=fashion_mnist",
    "--layers=1",
    "--init_channels=4",
    "--epochs=2",
    "--batch_size=16",
    "--drop_path_rate=0.2",
    "--seed=0",
    "--verbose=0",
]  # 4 steps an epoch; drop-path on, so its random masks must replay too


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _drop_dac_override() -> None:
    """In the child, before exec: drop root's permission to ignore file modes, so that a
    read-only directory is read-only for it too (no-op for other users)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def read_only_dir(path: Path) -> Path:
    """``path`` made read-only (mode 0o500); skips the test where a child process would
    still be able to write it (root that cannot drop its override capability)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o500)
    probe = subprocess.run(
        [sys.executable, "-c", f"open({str(path / 'probe')!r}, 'w')"],
        preexec_fn=_drop_dac_override,
        capture_output=True,
    )
    if probe.returncode == 0:
        (path / "probe").unlink()
        pytest.skip("cannot make a directory read-only for a child process here")
    return path


def run_program(
    module: str, *args: str, fault: str | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m module args`` as a real process (under ``faulty.py`` with a fault)."""
    command = (
        [sys.executable, str(HERE / "faulty.py"), module, *args]
        if fault
        else [sys.executable, "-m", module, *args]
    )
    environment = {**env(), "BNAS_FAULT": fault} if fault else env()
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def run_cases(
    module: str,
    cases: list[dict],
    work: Path,
    *,
    respect_modes: bool = False,
    logical_cpus: int | None = None,
) -> list[dict]:
    """Run ``cases`` (``{"args": [...], "fsize": n}``) of one program; their results in order.

    ``respect_modes``: run without root's permission override; ``logical_cpus``: split
    the CPU into that many devices (replicas of ``--strategy=mirrored``)."""
    work.mkdir(parents=True, exist_ok=True)
    cases_path, results_path = work / f"{module}.cases.json", work / f"{module}.results.json"
    cases_path.write_text(json.dumps(cases))
    process = subprocess.run(
        [sys.executable, str(HERE / "programs.py"), module, str(cases_path), str(results_path)],
        cwd=ROOT,
        env={**env(), **({"BNAS_LOGICAL_CPUS": str(logical_cpus)} if logical_cpus else {})},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_drop_dac_override if respect_modes else None,
    )
    assert process.returncode == 0 and results_path.exists(), process.stderr[-4000:]
    return json.loads(results_path.read_text())


def snapshot(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory`` (empty if missing)."""
    directory = Path(directory)
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
