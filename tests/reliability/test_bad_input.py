"""Bad input to the programs: a message naming the problem, a non-zero exit, nothing overwritten.

Every case runs the program's real ``main`` through ``absl.app.run`` with its command
line (``programs.py``: one process per program, for all its cases). For each case the
test checks the exit status, that the message names the problem (flag, file, op,
value), that its ``--output_dir`` was not created (validation comes before the run
directory) and that every file that existed before is unchanged, byte for byte.
The training harness runs without root's permission override, so a read-only
directory is read-only for it, and with its CPU split into 2 logical devices, so that
``--strategy=mirrored`` has 2 replicas.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype as genotype_lib

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from reliability_helpers import TINY_SEARCH, TINY_TRAIN, read_only_dir, run_cases, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def _genotype_files(root: Path) -> dict[str, Path]:
    root.mkdir()
    good = genotype_lib.BNAS_A.to_dict()
    text = json.dumps(good)
    unknown_op = json.loads(text)
    unknown_op["normal"][3][0] = "bin_conv_9x9"
    bad_input = json.loads(text)
    bad_input["reduce"][5][1] = 7
    foreign_op = json.loads(text)  # says bnas_kim, holds a DARTS separable convolution
    foreign_op["normal"][0][0] = "bin_sep_conv_3x3"
    files = {
        "malformed": '{"normal": [["bin_conv_3x3", 0],, ]}',
        "truncated": text[: len(text) // 2],
        "unknown_op": json.dumps(unknown_op),
        "bad_input": json.dumps(bad_input),
        "darts": json.dumps(genotype_lib.BNAS_XNOR_1.to_dict()),
        "foreign_op": json.dumps(foreign_op),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = root / f"{name}.json"
        paths[name].write_text(content)
    return paths


def _data_dirs(root: Path, good: Path) -> dict[str, Path]:
    dirs = {
        "empty": root / "empty",
        "truncated_gz": root / "truncated_gz",
        "bad_magic": root / "bad_magic",
    }
    for directory in dirs.values():
        directory.mkdir(parents=True)
        for path in good.iterdir():
            (directory / path.name).write_bytes(path.read_bytes())
    for path in dirs["empty"].iterdir():
        path.unlink()
    images = dirs["truncated_gz"] / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:200])
    labels = dirs["bad_magic"] / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x07" + raw[4:]))
    return dirs


def _previous_runs(root: Path) -> dict[str, Path]:
    run = root / "previous_run"  # what a finished bnas-search leaves (its files' content aside)
    run.mkdir(parents=True)
    (run / "bnas_run.json").write_text('{"program": "bnas-search"}')
    (run / "genotype.json").write_text(genotype_lib.BNAS_A.to_json())
    (run / "metrics.json").write_text('{"best_epoch": 1}')
    foreign = root / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    return {"previous_run": run, "foreign": foreign}


def _check(result: dict, expected: list[str], out: Path | None, kept: dict[Path, dict]) -> None:
    text = result["err"] + result["out"]
    assert result["code"] != 0, text[-3000:]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text[-3000:]}"
    if out is not None:
        assert not out.exists(), sorted(p.name for p in out.iterdir())
    for directory, before in kept.items():
        assert snapshot(directory) == before, directory


# ------------------------------------------------------------------------------- bnas-train


def _train_specs(root: Path, tiny_idx_dir_module: Path) -> list[dict]:
    g = _genotype_files(root / "genotypes")
    d = _data_dirs(root / "data", tiny_idx_dir_module)
    runs = _previous_runs(root / "runs")
    good_data = f"--data_dir={tiny_idx_dir_module}"
    cases = {
        "malformed_genotype": (
            [f"--genotype={g['malformed']}"],
            [str(g["malformed"]), "malformed genotype JSON", "line 1 column"],
        ),
        "truncated_genotype": (
            [f"--genotype={g['truncated']}"],
            [str(g["truncated"]), "malformed genotype JSON"],
        ),
        "unknown_op": (
            [f"--genotype={g['unknown_op']}"],
            ["normal cell, edge 3 (node 3): unknown op 'bin_conv_9x9'"],
        ),
        "input_out_of_range": (
            [f"--genotype={g['bad_input']}"],
            ["reduce cell, edge 5 (node 4): input 7 out of range 0..3"],
        ),
        "other_search_space": (
            [f"--genotype={g['darts']}", "--search_space=bnas_kim"],
            ["from search space 'bnas_darts'", "--search_space=bnas_kim"],
        ),
        "op_of_another_space": (
            [f"--genotype={g['foreign_op']}"],
            ["'bin_sep_conv_3x3' is not in search space 'bnas_kim'"],
        ),
        "not_a_genotype": (
            ["--genotype=not_a_genotype"],
            ["not_a_genotype", "not a published name"],
        ),
        "negative_epochs": (["--epochs=-3"], ["--epochs must be positive, got -3"]),
        "zero_learning_rate": (
            ["--learning_rate=0"],
            ["--learning_rate must be positive, got 0.0"],
        ),
        "zero_batch": (["--batch_size=0"], ["--batch_size must be positive, got 0"]),
        "batch_larger_than_data": (["--batch_size=128"], ["--batch_size=128", "64"]),
        "batch_not_divisible_by_replicas": (
            ["--strategy=mirrored", "--batch_size=7"],
            ["--batch_size=7", "2 replicas", "multiple of 2"],
        ),
        "unknown_optimizer": (
            ["--optimizer=lbfgs"],
            ["--optimizer must be 'sgd' or 'adam'", "lbfgs"],
        ),
        "unknown_dataset": (["--dataset=cifar11"], ["Unknown dataset 'cifar11'"]),
        "missing_idx_files": ([f"--data_dir={d['empty']}"], [str(d["empty"]), "apt-get install"]),
        "truncated_idx_gzip": (
            [f"--data_dir={d['truncated_gz']}"],
            ["train-images-idx3-ubyte.gz", "truncated or corrupt gzip"],
        ),
        "bad_idx_magic": (
            [f"--data_dir={d['bad_magic']}"],
            ["train-labels-idx1-ubyte.gz", "bad IDX magic number"],
        ),
        "unknown_flag": (["--no_such_flag=1"], ["Unknown command line flag 'no_such_flag'"]),
        "missing_flagfile": ([f"--flagfile={root / 'nope.cfg'}"], [str(root / "nope.cfg")]),
    }
    specs = []
    for name, (args, expected) in cases.items():
        out = root / "out" / name
        specs.append(
            {
                "name": name,
                "args": [*TINY_TRAIN, good_data, f"--output_dir={out}", *args],
                "expected": expected,
                "out": out,
                "kept": {},
            }
        )
    for name, args, expected, directory in (
        ("existing_run", [], ["is not empty; pass --overwrite"], runs["previous_run"]),
        (
            "overwrite_foreign_dir",
            ["--overwrite"],
            ["not made by bnas-tf", "refusing to delete"],
            runs["foreign"],
        ),
    ):
        specs.append(
            {
                "name": name,
                "args": [*TINY_TRAIN, good_data, f"--output_dir={directory}", *args],
                "expected": expected,
                "out": None,
                "kept": {directory: snapshot(directory)},
            }
        )
    # A full disk: no file may be written at all (the run-directory probe fails) ...
    full = root / "out" / "disk_full"
    specs.append(
        {
            "name": "disk_full",
            "args": [*TINY_TRAIN, good_data, f"--output_dir={full}"],
            "fsize": 0,
            "expected": [f"--output_dir {full} is not writable: File too large"],
            "out": None,
            "kept": {},
        }
    )
    # ... or only small files: the run starts, and fails at its first big write.
    midrun = root / "out" / "disk_full_mid_run"
    specs.append(
        {
            "name": "disk_full_mid_run",
            "args": [*TINY_TRAIN, good_data, f"--output_dir={midrun}"],
            "fsize": 8000,
            "expected": ["could not write its files", "File too large", "--resume"],
            "out": None,
            "kept": {},
        }
    )
    readonly = None
    try:
        readonly = read_only_dir(root / "read_only")
    except pytest.skip.Exception:
        pass
    if readonly is not None:
        specs.append(
            {
                "name": "read_only_dir",
                "args": [*TINY_TRAIN, good_data, f"--output_dir={readonly}"],
                "expected": [f"--output_dir {readonly} is not writable: Permission denied"],
                "out": None,
                "kept": {readonly: snapshot(readonly)},
            }
        )
    return specs


TRAIN_NAMES = [
    "malformed_genotype",
    "truncated_genotype",
    "unknown_op",
    "input_out_of_range",
    "other_search_space",
    "op_of_another_space",
    "not_a_genotype",
    "negative_epochs",
    "zero_learning_rate",
    "zero_batch",
    "batch_larger_than_data",
    "batch_not_divisible_by_replicas",
    "unknown_optimizer",
    "unknown_dataset",
    "missing_idx_files",
    "truncated_idx_gzip",
    "bad_idx_magic",
    "unknown_flag",
    "missing_flagfile",
    "existing_run",
    "overwrite_foreign_dir",
    "disk_full",
]


@pytest.mark.parametrize("name", TRAIN_NAMES)
def test_train_refuses(train_cases, name):
    spec, result = train_cases[name]
    _check(result, spec["expected"], spec["out"], spec["kept"])


def test_train_refuses_a_read_only_output_dir_before_starting(train_cases):
    if "read_only_dir" not in train_cases:
        pytest.skip("cannot make a directory read-only for a child process here")
    spec, result = train_cases["read_only_dir"]
    _check(result, spec["expected"], None, spec["kept"])


def test_train_on_a_full_disk_leaves_no_partial_outputs(train_cases):
    spec, result = train_cases["disk_full_mid_run"]
    _check(result, spec["expected"], None, {})
    run = Path(spec["args"][-1].split("=", 1)[1])
    assert (run / "network.json").exists()  # the run had started: the error came mid-run
    left = {p.name for p in run.rglob("*") if p.is_file()}
    assert not left & {"metrics.json", "weights.h5", "train_state.json"}, left
    assert not any(".tmp" in name for name in left), left


# ------------------------------------------------------------------------------ bnas-search

SEARCH_CASES = {
    "zero_epochs": (["--epochs=0"], ["--epochs must be positive, got 0"]),
    "negative_learning_rate": (
        ["--learning_rate=-1"],
        ["--learning_rate must be positive, got -1.0"],
    ),
    "zero_arch_learning_rate": (
        ["--arch_learning_rate=0"],
        ["--arch_learning_rate must be positive, got 0.0"],
    ),
    "k_not_dividing_channels": (
        ["--partial_channels=3"],
        ["--partial_channels K=3 must divide --init_channels=4"],
    ),
    "unknown_dataset": (["--dataset=imagenet9"], ["Unknown dataset 'imagenet9'"]),
    "unknown_flag": (["--no_such_flag=1"], ["Unknown command line flag 'no_such_flag'"]),
    "missing_flagfile": (["--flagfile=/nonexistent/run.cfg"], ["/nonexistent/run.cfg"]),
    "unknown_selection": (
        ["--genotype_selection=random"],
        ["--genotype_selection must be 'best' or 'last'"],
    ),
    "batch_larger_than_halves": (["--batch_size=64"], ["no full batch of 64"]),
    "portion_out_of_range": (["--train_portion=1.5"], ["portion must be in (0, 1), got 1.5"]),
}


def _search_specs(root: Path, tiny_idx_dir_module: Path) -> list[dict]:
    d = _data_dirs(root / "data", tiny_idx_dir_module)
    cases = {
        **SEARCH_CASES,
        "missing_idx_files": ([f"--data_dir={d['empty']}"], [str(d["empty"]), "apt-get install"]),
    }
    specs = []
    for name, (args, expected) in cases.items():
        out = root / "out" / name
        specs.append(
            {
                "name": name,
                "expected": expected,
                "out": out,
                "args": [
                    *TINY_SEARCH,
                    f"--data_dir={tiny_idx_dir_module}",
                    f"--output_dir={out}",
                    *args,
                ],
            }
        )
    # Not bad input but a fault, run here to share the process: a NaN loss in the first
    # stage of a search with operation space reduction (stages are its checkpoints).
    out = root / "out" / "reduction_nan"
    specs.append(
        {
            "name": "reduction_nan",
            "expected": ["loss became nan at epoch 1, step 2 (global step 2)"],
            "out": None,
            "args": [
                *TINY_SEARCH,
                f"--data_dir={tiny_idx_dir_module}",
                f"--output_dir={out}",
                "--method=reduction",
                "--learning_rate=1e38",
            ],
        }
    )
    return specs


@pytest.mark.parametrize("name", [*SEARCH_CASES, "missing_idx_files"])
def test_search_refuses(search_cases, name):
    spec, result = search_cases[name]
    _check(result, spec["expected"], spec["out"], {})


# ---------------------------------------------------------------------------- bnas-evaluate
# Untrusted run directories: network.json only holds arguments (the model is built from
# code) and weights.h5 must be a plain weights file for exactly that network.

SPEC = {
    "genotype": genotype_lib.BNAS_A.to_dict(),
    "layers": 1,
    "init_channels": 4,
    "num_classes": 10,
    "input_shape": [28, 28, 1],
    "stem": "cifar",
    "binarization": "sign_scale",
    "inter_cell_skip": True,
    "dataset": "fashion_mnist",
}


def _model_dir(path: Path, spec: dict, weights: bytes | None) -> Path:
    path.mkdir(parents=True)
    (path / "network.json").write_text(json.dumps(spec))
    if weights is not None:
        (path / "weights.h5").write_bytes(weights)
    return path


def _weights(tmp: Path, **changes) -> bytes:
    from bnas_tf.training import build_from_spec

    model = build_from_spec({**SPEC, **changes})
    model.save_weights(str(tmp / "w.h5"))
    return (tmp / "w.h5").read_bytes()


def _lambda_model_file(tmp: Path, marker: Path) -> bytes:
    """A whole Keras model in HDF5 whose Lambda layer would create ``marker`` if run."""
    import tensorflow as tf

    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Lambda(
        lambda t, path=str(marker): (open(path, "w").close(), t)[1], name="stem0_conv"
    )(inputs)
    model = tf.keras.Model(
        inputs, tf.keras.layers.Dense(10, name="logits")(tf.keras.layers.Flatten()(x))
    )
    marker.unlink(missing_ok=True)  # building the model ran it once, here
    model.save(tmp / "evil.h5")
    return (tmp / "evil.h5").read_bytes()


def _evaluate_specs(root: Path, tiny_idx_dir_module: Path) -> list[dict]:
    tmp = root / "tmp"
    tmp.mkdir()
    good = _weights(tmp)
    marker = root / MARKER
    bad_genotype = json.loads(json.dumps(SPEC))
    bad_genotype["genotype"]["normal"][0][0] = "rm_rf"
    dirs = {
        "missing_model_dir": (root / "nonexistent", ["--model_dir", str(root / "nonexistent")]),
        "wrong_architecture": (
            _model_dir(root / "arch", {**SPEC, "layers": 2}, good),
            ["does not fit", "no weights for", "different architecture"],
        ),
        "wrong_num_classes": (
            _model_dir(root / "classes", SPEC, _weights(tmp, num_classes=5)),
            ["does not fit", "logits", "(cells, channels or classes)"],
        ),
        "corrupt_weights": (
            _model_dir(root / "corrupt", SPEC, good[: len(good) // 2]),
            [str(root / "corrupt" / "weights.h5")],
        ),
        "lambda_layer": (
            _model_dir(root / "lambda", SPEC, _lambda_model_file(tmp, marker)),
            ["whole saved model", "Lambda"],
        ),
        "input_too_small": (
            _model_dir(root / "small", {**SPEC, "input_shape": [3, 3, 1]}, good),
            ["input_shape (3, 3, 1) is too small", "needs at least 4x4"],
        ),
        "one_class": (
            _model_dir(root / "one_class", {**SPEC, "num_classes": 1}, good),
            ["num_classes must be at least 2, got 1"],
        ),
        "malformed_network_json": (
            _model_dir(root / "malformed", SPEC, good),
            ["network.json", "malformed JSON"],
        ),
        "unknown_op_in_network_json": (
            _model_dir(root / "unknown_op", bad_genotype, good),
            ["unknown op 'rm_rf'"],
        ),
    }
    (root / "malformed" / "network.json").write_text(json.dumps(SPEC)[:100])
    specs = []
    for name, (model_dir, expected) in dirs.items():
        out = root / "out" / name
        specs.append(
            {
                "name": name,
                "expected": expected,
                "out": out,
                "kept": {model_dir: snapshot(model_dir)},
                "args": [
                    f"--model_dir={model_dir}",
                    f"--data_dir={tiny_idx_dir_module}",
                    f"--output_dir={out}",
                ],
            }
        )
    return specs


MARKER = "lambda_ran"  # created by the Lambda layer of _lambda_model_file if it ever runs


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_idx_dir_module):
    """Every case of this module; the three programs' processes run side by side."""
    root = tmp_path_factory.mktemp("cases")
    prepare = {"train": _train_specs, "search": _search_specs, "evaluate": _evaluate_specs}
    specs = {}
    for program, make in prepare.items():
        (root / program).mkdir()
        specs[program] = make(root / program, tiny_idx_dir_module)

    def run(program):
        payload = [{"args": s["args"], "fsize": s.get("fsize")} for s in specs[program]]
        # the training runs without root's permission override (its read-only case)
        return run_cases(
            f"bnas_tf.apps.{program}",
            payload,
            root / program,
            respect_modes=program == "train",
            logical_cpus=2 if program == "train" else None,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(prepare, pool.map(run, prepare)))
    return {
        program: {s["name"]: (s, r) for s, r in zip(specs[program], results[program])}
        for program in prepare
    }, root


@pytest.fixture(scope="module")
def train_cases(cases):
    return cases[0]["train"]


@pytest.fixture(scope="module")
def search_cases(cases):
    return cases[0]["search"]


@pytest.fixture(scope="module")
def evaluate_cases(cases):
    return cases[0]["evaluate"], cases[1] / "evaluate" / MARKER


EVALUATE_NAMES = [
    "missing_model_dir",
    "wrong_architecture",
    "wrong_num_classes",
    "corrupt_weights",
    "lambda_layer",
    "input_too_small",
    "one_class",
    "malformed_network_json",
    "unknown_op_in_network_json",
]


@pytest.mark.parametrize("name", EVALUATE_NAMES)
def test_evaluate_refuses(evaluate_cases, name):
    spec, result = evaluate_cases[0][name]
    _check(result, spec["expected"], spec["out"], spec["kept"])


def test_a_lambda_layer_in_a_weights_file_never_runs(evaluate_cases):
    assert not evaluate_cases[1].exists()


# ------------------------------------------------------------------------- zoo weights files


def test_zoo_refuses_a_weights_file_whose_hash_differs_from_the_registry(tmp_path, monkeypatch):
    """A published file altered after publishing (same size, one byte changed) is refused
    before use and leaves no copy in the cache; the intact file is accepted."""
    from bnas_tf.zoo import registry

    zoo_dir, cache = tmp_path / "zoo", tmp_path / "cache"
    (zoo_dir / "weights").mkdir(parents=True)
    weights = zoo_dir / "weights" / "BNASFM-tiny.h5"
    weights.write_bytes(_weights(tmp_path))
    entry = {"file": "weights/BNASFM-tiny.h5", "sha256": registry.sha256(weights), "network": SPEC}
    table = {
        "format_version": registry.FORMAT_VERSION,
        "models": {"BNASFM": {"weights": {"tiny": entry}}},
    }
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(zoo_dir))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(registry.ZOO_URL_ENV, raising=False)
    good = weights.read_bytes()
    middle = len(good) // 2
    weights.write_bytes(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :])
    with pytest.raises(
        registry.WeightsHashError, match=f"does not match the registry's {entry['sha256']}"
    ):
        registry.fetch("BNASFM", "tiny", registry=table)
    assert not any(p.is_file() for p in cache.rglob("*"))
    weights.write_bytes(good)
    assert registry.sha256(registry.fetch("BNASFM", "tiny", registry=table)) == entry["sha256"]


def test_reduction_search_stops_on_a_nan_loss_before_saving_the_stage(search_cases):
    spec, result = search_cases["reduction_nan"]
    _check(result, spec["expected"], None, {})
    run = Path(spec["args"][-3].split("=", 1)[1])
    left = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert "bnas_run.json" in left  # the search had started
    assert not any(
        name.startswith(("genotype", "metrics", "reduction_state", "checkpoints/")) for name in left
    ), left
