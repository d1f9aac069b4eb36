"""keras-tuner (:mod:`bnas_tf.tuner`, ``bnas-tune``) and the random-genotype sampler
(:mod:`bnas_tf.sampling`).

The tuning runs use the random-architecture mode on a 1-cell, 4-channel network and 48
training images: a trial is one short training (a few seconds).
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.genotype import STEPS, Genotype
from bnas_tf.sampling import genotype_space, random_genotype, sample_genotype
from bnas_tf.search.driver import SearchConfig
from bnas_tf.training import TrainConfig
from bnas_tf.tuner import TuneConfig, parse_space, trial_configs

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 540  # generous: a loaded 2-core machine is several times slower than a quiet one


# ---------------------------------------------------------------------------------------
# The random-genotype sampler
# ---------------------------------------------------------------------------------------


def test_random_genotype_is_valid_seeded_and_varied():
    genotypes = [random_genotype(seed) for seed in range(20)]
    assert random_genotype(3) == genotypes[3]
    assert len(set(genotypes)) == 20
    for genotype in genotypes:
        assert genotype.search_space == "bnas_kim" and "none" not in genotype.ops("both")
        for cell in (genotype.normal, genotype.reduce):
            for node in range(STEPS):
                (_, a), (_, b) = cell[2 * node : 2 * node + 2]
                assert a < b < node + 2  # two distinct inputs among the earlier states


def test_random_genotype_reaches_every_choice():
    space = genotype_space("bnas_darts")
    seen = collections.defaultdict(set)

    def nth(n):
        def choose(name, options):
            seen[name].add(options[n % len(options)])
            return options[n % len(options)]

        return choose

    for n in range(10):  # the longest list: the 10 input pairs of the last node
        sample_genotype(nth(n), "bnas_darts")
    assert {name: sorted(values) for name, values in seen.items()} == {
        name: sorted(options) for name, options in space.items()
    }
    assert len(space) == 2 * STEPS * 3  # per cell and node: an input pair and 2 ops
    assert space["normal_node3_inputs"] == [
        "0,1",
        "0,2",
        "0,3",
        "0,4",
        "1,2",
        "1,3",
        "1,4",
        "2,3",
        "2,4",
        "3,4",
    ]


def test_sample_genotype_from_keras_tuner_choices():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    genotype = sample_genotype(hp.Choice)  # every decision's first option
    assert isinstance(genotype, Genotype)
    assert genotype.normal[:2] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert len(hp.space) == len(genotype_space())
    assert sample_genotype(lambda name, options: hp.get(name)) == genotype


def test_allow_none():
    assert "none" in genotype_space(allow_none=True)["reduce_node0_op0"]
    assert "none" not in genotype_space()["reduce_node0_op0"]


# ---------------------------------------------------------------------------------------
# Hyperparameter spaces and trial configurations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, integer, expected",
    [
        ("sign_scale, xnor", False, {"kind": "choice", "values": ["sign_scale", "xnor"]}),
        ("0.5,1,2", False, {"kind": "choice", "values": [0.5, 1.0, 2.0]}),
        ("8,16", True, {"kind": "choice", "values": [8, 16]}),
        ("0..2", False, {"kind": "range", "min": 0.0, "max": 2.0, "sampling": "linear"}),
        ("1e-4..1e-2:log", False, {"kind": "range", "min": 1e-4, "max": 1e-2, "sampling": "log"}),
    ],
)
def test_parse_space(text, integer, expected):
    assert parse_space(text, integer=integer) == expected


@pytest.mark.parametrize(
    "text, integer, match",
    [
        ("2..1", False, "min < max"),
        ("0..1:log", False, "min > 0"),
        ("1..2:cubic", False, "sampling"),
        ("4,x", True, "not a number"),
        ("2.5", True, "not an integer"),
        ("1,1", False, "duplicate"),
        ("", False, "empty"),
    ],
)
def test_parse_space_errors(text, integer, match):
    with pytest.raises(ValueError, match=match):
        parse_space(text, integer=integer, name="--hp_x")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "grid"}, "--mode"),
        ({"oracle": "evolution"}, "--oracle"),
        ({"strategy": "multi_worker"}, "keras-tuner's chief and workers"),
        ({"mode": "random_arch", "hp_entropy_lambda": "0..1"}, "cannot be tuned"),
        ({"mode": "search", "hp_train_learning_rate": "0.1,0.2"}, "trains no network"),
        ({"hp_init_channels": "8..16:log2"}, "sampling"),
    ],
)
def test_tune_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TuneConfig(**kwargs).validate()


def test_bayesian_oracle_names_its_missing_dependencies(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ValueError, match=r"sklearn, scipy missing\): pip install 'keras-tuner\[bayesian\]'"
    ):
        TuneConfig(oracle="bayesian").validate()


def test_trial_configs_apply_values_to_search_and_training():
    config = TuneConfig(mode="search_train", hp_init_channels="8,16", hp_entropy_lambda="0..2")
    values = {
        "init_channels": 16,
        "entropy_lambda": 0.5,
        "train_learning_rate": 0.01,
        "binarization": "xnor",
        "tuner/epochs": 3,
    }
    search, train = trial_configs(values, config, SearchConfig(), TrainConfig())
    assert (search.init_channels, search.entropy_lambda, search.binarization, search.epochs) == (
        16,
        0.5,
        "xnor",
        3,
    )
    assert (train.init_channels, train.learning_rate, train.binarization, train.epochs) == (
        16,
        0.01,
        "xnor",
        600,
    )
    with pytest.raises(ValueError, match="partial_channels"):  # K=3 does not divide 16 channels
        trial_configs({"partial_channels": 3}, config, SearchConfig(), TrainConfig())


# ---------------------------------------------------------------------------------------
# Tuning runs (random-architecture baseline on tiny data)
# ---------------------------------------------------------------------------------------


def _train_config(data_dir) -> TrainConfig:
    return TrainConfig(
        dataset="fashion_mnist",
        data_dir=str(data_dir),
        limit=48,
        limit_test=16,
        batch_size=16,
        epochs=1,
        layers=1,
        init_channels=4,
        lr_schedule="constant",
        verbose=0,
    )


def _trial_log(project: Path) -> list[dict]:
    paths = sorted(project.glob("trials_*.jsonl"))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def _statuses(project: Path) -> dict[str, str]:
    return {
        p.parent.name: json.loads(p.read_text())["status"]
        for p in project.glob("trial_*/trial.json")
    }


def _write_train_flags(path: Path, data_dir) -> Path:
    config = _train_config(data_dir)
    lines = [
        f"--{k}={getattr(config, k)}"
        for k in (
            "dataset",
            "data_dir",
            "limit",
            "limit_test",
            "batch_size",
            "epochs",
            "layers",
            "init_channels",
            "lr_schedule",
            "verbose",
        )
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tune_command(tmp_path, data_dir, max_trials) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bnas_tf.apps.tune",
        "--mode=random_arch",
        f"--max_trials={max_trials}",
        f"--train_flagfile={_write_train_flags(tmp_path / 'train.cfg', data_dir)}",
        f"--directory={tmp_path / 'tune'}",
        "--project_name=p",
        "--val_examples=16",
    ]


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(name, None)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory, tiny_idx_dir_module):
    """A 3-trial ``bnas-tune`` run killed once trial 0 is done, then run again."""
    tmp = tmp_path_factory.mktemp("killed")
    command = _tune_command(tmp, tiny_idx_dir_module, max_trials=3) + [
        "--hp_train_learning_rate=1e-3..1e-2:log"
    ]
    project = tmp / "tune" / "p"
    with open(tmp / "first.log", "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.time() + TIMEOUT
    while not (project / "tuner0.json").exists():  # trial 0 done and recorded by keras-tuner
        assert process.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no trial finished"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = _trial_log(project)
    rerun = subprocess.run(
        command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return types.SimpleNamespace(project=project, first=first, rerun=rerun)


def test_killed_tuner_resumes_without_repeating_finished_trials(killed_and_rerun):
    run = killed_and_rerun
    assert [e["trial_id"] for e in run.first if e["event"] == "end"] == ["0"]
    assert "Reloading Tuner" in run.rerun.stdout
    ends = collections.Counter(
        e["trial_id"] for e in _trial_log(run.project) if e["event"] == "end"
    )
    assert ends == {"0": 1, "1": 1, "2": 1}  # trial 0's work was not done again


def test_three_trial_run_completes_and_reports_the_best(killed_and_rerun):
    project = killed_and_rerun.project
    assert _statuses(project) == {f"trial_{i}": "COMPLETED" for i in range(3)}
    records = [
        json.loads((project / f"trial_{i}" / "bnas_trial.json").read_text()) for i in range(3)
    ]
    scores = {str(i): r["metrics"]["val_accuracy"] for i, r in enumerate(records)}
    assert len({json.dumps(r["genotype"]) for r in records}) == 3  # three sampled cells
    for i, record in enumerate(records):
        Genotype.from_dict(record["genotype"])
        assert 1e-3 <= record["values"]["train_learning_rate"] <= 1e-2
        assert (project / f"trial_{i}" / "train" / "weights.h5").exists()
    best = json.loads((project / "best_trial.json").read_text())
    assert best["score"] == max(scores.values()) == scores[best["trial_id"]]
    assert best["objective"] == "val_accuracy" and best["trials"]["COMPLETED"] == 3
    assert (
        f"Best trial {best['trial_id']}: val_accuracy = {best['score']}"
        in killed_and_rerun.rerun.stdout
    )


def test_chief_and_two_workers_share_four_trials(tmp_path, tiny_idx_dir):
    command = _tune_command(tmp_path, tiny_idx_dir, max_trials=4)
    port = _free_port()
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        with open(tmp_path / f"{tuner_id}.log", "w") as log:
            processes[tuner_id] = subprocess.Popen(
                command,
                cwd=ROOT,
                env=_env(KERASTUNER_TUNER_ID=tuner_id, **oracle),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    try:
        for tuner_id, process in processes.items():
            assert process.wait(timeout=TIMEOUT) == 0, (tmp_path / f"{tuner_id}.log").read_text()[
                -3000:
            ]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()

    project = tmp_path / "tune" / "p"
    assert _statuses(project) == {f"trial_{i}": "COMPLETED" for i in range(4)}
    ends = [(e["trial_id"], e["tuner_id"]) for e in _trial_log(project) if e["event"] == "end"]
    assert sorted(t for t, _ in ends) == ["0", "1", "2", "3"]  # none lost, none run twice
    assert {w for _, w in ends} == {"tuner0", "tuner1"}  # both workers ran trials
    assert "Best trial" in (tmp_path / "chief.log").read_text()
    assert json.loads((project / "best_trial.json").read_text())["trials"]["COMPLETED"] == 4


@pytest.mark.parametrize("path", sorted((ROOT / "flags").glob("tune_*.cfg")), ids=lambda p: p.name)
def test_tune_flagfiles_parse_and_validate(monkeypatch, path):
    from bnas_tf.apps import common
    from bnas_tf.apps import tune as tune_app

    from absl import flags

    monkeypatch.chdir(ROOT)  # flagfiles name the trial flagfiles relative to the repository
    values = flags.FlagValues()
    tune_app.define_flags(values)
    values(["bnas-tune", f"--flagfile={path}"])
    config = common.config_from_flags(TuneConfig, values).validate()
    search = tune_app.base_config(SearchConfig, values.search_flagfile).validate()
    train = tune_app.base_config(TrainConfig, values.train_flagfile).validate()
    assert values.search_flagfile or values.train_flagfile
    assert config.spaces() or config.mode == "random_arch"
    trial_configs({}, config, search, train)
