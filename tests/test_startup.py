"""The programs' start-up: TensorFlow's start-up notices hidden, other stderr kept, ``--help``."""

from __future__ import annotations

from bnas_tf.apps.startup import LOGGING_HELP, STARTUP_NOISE

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Program module -> a flag that only that program defines.
PROGRAMS = {
    "search": "--partial_channels",
    "train": "--genotype",
    "evaluate": "--model_dir",
    "export": "--format",
    "publish": "--run_dir",
    "tune": "--search_flagfile",
}


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_help_lists_the_programs_flags_and_how_to_see_tensorflows_logs(program, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", f"bnas_tf.apps.{program}", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    # absl's --help exits with status 1 after printing the usage to stdout.
    assert f"bnas-{program}" in result.stdout.splitlines()[0]
    assert PROGRAMS[program] in result.stdout
    assert " ".join(LOGGING_HELP.split()) in " ".join(result.stdout.split())
    noise = [line for line in result.stderr.splitlines() if STARTUP_NOISE.search(line)]
    assert noise == [], result.stderr


def test_tf_cpp_min_log_level_set_by_the_user_shows_the_start_up_notices(tmp_path):
    """With the variable set nothing is filtered (on this CPU TensorFlow prints notices at 0)."""
    script = "import bnas_tf.apps, tensorflow as tf; tf.config.list_physical_devices()"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(TF_CPP_MIN_LOG_LEVEL="0"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert any(STARTUP_NOISE.search(line) for line in result.stderr.splitlines()), result.stderr


def test_other_stderr_output_during_the_import_is_written_back(tmp_path):
    """A stand-in ``tensorflow`` writes a notice and a real warning to file descriptor 2."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        textwrap.dedent("""
        import os, types
        os.write(2, b"I0000 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\\n")
        os.write(2, b"W0000 1 some_kernel.cc:7] a warning the user must see\\n")
        config = types.SimpleNamespace(list_physical_devices=lambda: [])
    """)
    )
    script = (
        "import os, sys, bnas_tf.apps; "
        "print('tensorflow' in sys.modules, os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1"]
    assert "a warning the user must see" in result.stderr
    assert "cudart_stub" not in result.stderr


THREAD_SETTINGS = ("TF_NUM_INTRAOP_THREADS", "TF_ENABLE_ONEDNN_OPTS")
x86_64_only = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="bnas_tf turns oneDNN on for x86-64 Linux only",
)


def _thread_env(**settings: str) -> dict[str, str]:
    """The child's environment with only ``settings`` of ``THREAD_SETTINGS`` (this process's
    own, which ``import bnas_tf`` may have set, left out)."""
    return {k: v for k, v in _env(**settings).items() if k in settings or k not in THREAD_SETTINGS}


def _onednn_choice(prelude: str = "", **settings: str) -> str:
    """What ``import bnas_tf`` leaves in ``TF_ENABLE_ONEDNN_OPTS`` in a child process, after
    ``prelude`` (``None``: unset, TensorFlow's default, Eigen)."""
    code = f"{prelude}import bnas_tf, os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_thread_env(**settings),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@x86_64_only
@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"TF_NUM_INTRAOP_THREADS": "2"}, "1"),
        ({"TF_NUM_INTRAOP_THREADS": "1"}, "None"),
        ({"TF_NUM_INTRAOP_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "1"}, "1"),  # asked for
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "0"),
    ],
)
def test_onednn_is_chosen_only_with_more_than_one_intra_op_thread(settings, expected):
    assert _onednn_choice(**settings) == expected


@x86_64_only
@pytest.mark.parametrize("cpus, expected", [(1, "None"), (2, "1")])
def test_onednn_follows_the_cpus_the_process_may_run_on(cpus, expected):
    """Without ``TF_NUM_INTRAOP_THREADS``, TensorFlow runs one intra-op thread per CPU of the
    process's affinity; one CPU leaves oneDNN off."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < cpus:
        pytest.skip(f"needs sched_setaffinity and {cpus} CPUs")
    allowed = sorted(os.sched_getaffinity(0))[:cpus]
    assert _onednn_choice(f"import os; os.sched_setaffinity(0, {allowed}); ") == expected


def test_factorized_reduce_trains_on_one_intra_op_thread():
    """TensorFlow 2.21's oneDNN kernels corrupt the heap in this backward pass on one
    intra-op thread (``free(): invalid pointer``, an abort); ``import bnas_tf`` keeps them
    off there, so the steps finish."""
    code = textwrap.dedent(
        """
        import bnas_tf
        import tensorflow as tf
        from bnas_tf.ops import FactorizedReduce

        layer = FactorizedReduce(4)
        layer(tf.zeros((4, 8, 8, 4)))

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) ** 2)
            return tape.gradient(loss, [x, *layer.trainable_variables])

        for _ in range(20):
            step(tf.random.normal((4, 8, 8, 4)))
        print("finished")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_thread_env(TF_NUM_INTRAOP_THREADS="1"),
        timeout=300,
    )
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr[-2000:]
