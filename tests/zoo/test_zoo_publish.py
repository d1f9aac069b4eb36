"""bnas-publish: a finished bnas-train run becomes a loadable zoo entry."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf import genotype as genotype_lib
from bnas_tf import zoo
from bnas_tf.genotype import Genotype
from bnas_tf.training import load_trained
from bnas_tf.zoo import registry
from bnas_tf.zoo.publish import publish

import shutil
from pathlib import Path

import numpy as np
import pytest


def test_published_entry_files_and_card(tiny_zoo, tiny_run):
    entry = registry.load(tiny_zoo)["models"]["BNASB"]["weights"]["fashion_mnist"]
    for key in ("", "notop_"):
        path = tiny_zoo / entry[f"{key}file"]
        assert path.stat().st_size == entry[f"{key}size"]
        assert registry.sha256(path) == entry[f"{key}sha256"]
        assert entry[f"{key}sha256"][:8] in path.name
    assert entry["network"]["layers"] == 3 and entry["network"]["input_shape"] == [28, 28, 1]
    assert entry["metrics"]["epochs"] == 1 and entry["metrics"]["test_examples"] == 32
    assert entry["metrics"]["params_1bit"] > 0 and 0 < entry["metrics"]["binarized_mac_ratio"] < 1
    flags = (tiny_zoo / entry["flagfile"]).read_text().splitlines()
    assert "--layers=3" in flags and "--genotype=bnas_a" in flags
    assert all(line.startswith("--") for line in flags)
    assert Genotype.load(tiny_zoo / entry["genotype_file"]) == Genotype.from_dict(
        entry["network"]["genotype"]
    )
    card = zoo.model_card("BNASB", directory=tiny_zoo)
    assert (tiny_zoo / "cards" / "BNASB.md").read_text() == card
    assert "| `fashion_mnist` | fashion_mnist |" in card and "Total params" in card  # larq summary
    assert "8 cells x 24 channels" in card  # the chosen reference size and its reason
    assert "3 x 8" in card  # the note: this instance now defines the reference


def test_existing_entry_needs_overwrite(tiny_run, tmp_path):
    first = publish(tiny_run, "BNASA", zoo_dir=tmp_path)
    with pytest.raises(
        FileExistsError, match="already has BNASA weights 'fashion_mnist'; pass --overwrite"
    ):
        publish(tiny_run, "bnasa", zoo_dir=tmp_path)
    second = publish(tiny_run, "BNASA", zoo_dir=tmp_path, overwrite=True)
    assert (
        registry.load(tmp_path)["models"]["BNASA"]["weights"]["fashion_mnist"]["published"]
        == second["published"]
    )
    files = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert files == sorted(Path(second[k]).name for k in ("file", "notop_file"))
    assert first["sha256"] == second["sha256"] or Path(first["file"]).name not in files


def test_unfinished_or_foreign_runs_are_refused(tiny_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(
        tiny_run,
        partial,
        ignore=shutil.ignore_patterns("metrics.json", "checkpoints", "tensorboard"),
    )
    with pytest.raises(ValueError, match="not a finished bnas-train run: metrics.json missing"):
        publish(partial, "BNASA", zoo_dir=tmp_path / "zoo")
    with pytest.raises(ValueError, match="The run's cell is not BNASD's \\(latest_cell\\)"):
        publish(tiny_run, "BNASD", zoo_dir=tmp_path / "zoo")
    with pytest.raises(
        ValueError,
        match="The run's binarization is 'sign_scale' but BNASXNOR uses 'xnor'|cell is not "
        "BNASXNOR",
    ):
        publish(tiny_run, "BNASXNOR", zoo_dir=tmp_path / "zoo")
    for name in ("../evil", "a b", ""):
        with pytest.raises(ValueError, match="not a valid name"):
            publish(tiny_run, name, zoo_dir=tmp_path / "zoo")
    with pytest.raises(ValueError, match="not a valid name"):
        publish(tiny_run, "BNASA", weights_name="x/../../y", zoo_dir=tmp_path / "zoo")
    assert not (tmp_path / "zoo" / registry.REGISTRY_FILE).exists()


def test_publish_program_creates_a_new_model(tiny_run, tmp_path, monkeypatch, capsys):
    """bnas-publish --name NEW: get(NEW) is a model function that loads the run's weights."""
    from bnas_tf.apps import publish as program

    from absl import app, flags

    argv = [
        "bnas-publish",
        f"--run_dir={tiny_run}",
        "--name=TinyNet",
        "--model=bnasa",
        "--weights_name=fm_tiny",
        f"--zoo_dir={tmp_path}",
    ]
    flag_values = flags.FlagValues()
    program.define_flags(flag_values)
    flag_values(argv)
    program.main(argv[:1], flag_values)
    assert "Published TinyNet(weights='fm_tiny')" in capsys.readouterr().out
    with pytest.raises(
        app.UsageError, match="already has TinyNet weights 'fm_tiny'; pass --overwrite"
    ):
        program.main(argv[:1], flag_values)

    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert zoo.list_models()[-1] == "TinyNet"
    fn = zoo.get("tinynet")
    assert fn.__name__ == "TinyNet" and "fm_tiny" in fn.__doc__
    model = fn()  # default weights: its first published instance
    trained, _ = load_trained(tiny_run)
    x = np.random.default_rng(4).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert zoo.get("TinyNet")(weights="fm_tiny", include_top=False).output_shape == (
        None,
        7,
        7,
        128,
    )
    assert "Derived from BNASA" in zoo.model_card("TinyNet")
    with pytest.raises(ValueError, match="available: 'fm_tiny'"):
        fn(weights="fashion_mnist")


def test_a_bmes_group_network_publishes_as_a_new_model(tmp_path, monkeypatch):
    """The network.json of a BMES run (a group genotype) is published, carded and rebuilt by the
    zoo like a cell network's; a built-in (cell) model name refuses it."""
    from bnas_tf.mobilenet import GroupGenotype
    from bnas_tf.training import TrainConfig, train_network

    from conftest import TINY_RUN, _write_idx_files

    genotype = GroupGenotype(groups=(1, 2, 2, 4, 4, 8), width=8)
    (tmp_path / "groups.json").write_text(genotype.to_json())
    run = tmp_path / "train"
    run.mkdir()
    config = {**TINY_RUN, "genotype": str(tmp_path / "groups.json"), "limit": 16}
    train_network(TrainConfig(data_dir=str(_write_idx_files(tmp_path / "idx")), **config), run)
    with pytest.raises(ValueError, match="is a BMES group network .* not BNASA's cell network"):
        publish(run, "BNASA", zoo_dir=tmp_path / "zoo")
    entry = publish(run, "TinyGroups", zoo_dir=tmp_path / "zoo")

    directory = tmp_path / "zoo"
    assert genotype_lib.get(str(directory / entry["genotype_file"])) == genotype
    card = (directory / entry["card"]).read_text()
    assert "binary MobileNet of 6 blocks x width 8, groups [1, 2, 2, 4, 4, 8]" in card
    assert "inter-cell skips" not in card
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(directory))
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "cache"))
    trained, _ = load_trained(run)
    x = np.random.default_rng(4).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        zoo.get("TinyGroups")().predict(x, verbose=0), trained.predict(x, verbose=0), atol=1e-6
    )
    assert zoo.get("TinyGroups")(include_top=False).output_shape == (None, 7, 7, 32)
