"""The zoo of an installed package: a wheel built from this tree, installed outside it.

A user installs bnas_tf with pip (``pip install git+...`` or a wheel), not as a source
checkout, so the registry, cards and weight files must travel inside the wheel
(``bnas_tf/zoo/published/``, setup.cfg's package data) and ``registry.zoo_dir()`` must find
them there. The wheel is built from a copy of the tree (so no stale ``build/`` can leak
into it), installed with ``pip install --target`` into a fresh directory, and used from a
working directory outside the repository, with an empty Keras cache.
"""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "runs",
    "build",
    "dist",
    "site",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ci",
)

_USER = r"""
import json, sys
import numpy as np
import bnas_tf
from bnas_tf import data
from bnas_tf.zoo import BNASB, preprocess_input, registry
from bnas_tf.zoo.publish import publish

site, fashion = sys.argv[1], sys.argv[2]
entry = registry.weights_entry("BNASB", "fashion_mnist")
path = registry.fetch("BNASB", "fashion_mnist")
images, labels = data.load_arrays("fashion_mnist", "test", data_dir=fashion, limit=100)
model = BNASB(weights="fashion_mnist")
logits = model.predict(preprocess_input(images), verbose=0)
top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
try:
    publish("no_such_run", "BNASB", weights_name="mine")
    refusal = None
except ValueError as error:
    refusal = str(error)
print("RESULT " + json.dumps({
    "package": bnas_tf.__file__, "zoo_dir": str(registry.zoo_dir()), "fetched": path,
    "fetched_sha256": registry.sha256(path), "sha256": entry["sha256"],
    "card_top1": entry["metrics"]["top1"], "top1": top1, "refusal": refusal,
}))
"""


def test_setup_cfg_lists_every_package():
    """setup.cfg lists its packages (to map zoo/ into the wheel): none may be forgotten."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = set(find_packages(str(ROOT), include=["bnas_tf", "bnas_tf.*"]))
    assert listed == found | {"bnas_tf.zoo.published"}
    assert config["options"]["package_dir"].split() == ["bnas_tf.zoo.published", "=", "zoo"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"
    shutil.copytree(ROOT, tree, ignore=_SKIP)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(tree),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (path,) = (root / "dist").glob("bnas_tf-*.whl")
    return path


def test_wheel_carries_the_zoo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    registry = json.loads((ROOT / "zoo" / "registry.json").read_text())
    expected = {"bnas_tf/zoo/published/registry.json"}
    for model in registry["models"].values():
        for entry in model["weights"].values():
            for key in ("file", "notop_file", "card", "flagfile", "genotype_file"):
                expected.add(f"bnas_tf/zoo/published/{entry[key]}")
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith(("tests/", "benchmarks/", "zoo/")) for name in names)


def test_installed_wheel_loads_bnasb_from_outside_the_repository(wheel, tmp_path, fashion_dir):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNAS_TF_")}
    env.update(
        PYTHONPATH=str(site), BNAS_TF_CACHE_DIR=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2"
    )
    done = subprocess.run(
        [sys.executable, "-c", _USER, str(site), str(fashion_dir)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    package = Path(site, "bnas_tf")
    assert Path(result["package"]).parent == package  # the installed copy, not this checkout
    assert Path(result["zoo_dir"]) == package / "zoo" / "published"
    assert Path(result["fetched"]).is_relative_to(tmp_path / "cache")
    assert result["fetched_sha256"] == result["sha256"]
    # 100 images: within 3 points of the card (its top-1 is over all 10,000)
    assert abs(result["top1"] - result["card_top1"]) <= 0.03, result
    # publishing into the installed package's own copy is refused, naming the way out
    assert (
        result["refusal"]
        and "--zoo_dir" in result["refusal"]
        and "installed package" in result["refusal"]
    )


def test_zoo_dir_is_the_override_then_the_checkout_then_the_installed_copy(tmp_path, monkeypatch):
    from bnas_tf.zoo import registry

    checkout, packaged = tmp_path / "checkout", tmp_path / "packaged"
    packaged.mkdir()
    (packaged / registry.REGISTRY_FILE).write_text("{}")
    monkeypatch.setattr(registry, "checkout_zoo_dir", lambda: checkout)
    monkeypatch.setattr(registry, "packaged_zoo_dir", lambda: packaged)
    monkeypatch.delenv(registry.ZOO_DIR_ENV, raising=False)
    # installed: no checkout
    assert registry.zoo_dir() == packaged and registry.is_packaged(packaged)
    checkout.mkdir()
    (checkout / registry.REGISTRY_FILE).write_text("{}")
    assert registry.zoo_dir() == checkout and not registry.is_packaged(checkout)
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(tmp_path / "mine"))
    assert registry.zoo_dir() == (tmp_path / "mine").resolve()


def test_weights_come_from_the_mirror_then_the_zoo_then_the_registry_base_url(
    tmp_path, monkeypatch
):
    from bnas_tf.zoo import registry

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "here.h5").write_bytes(b"w")
    monkeypatch.setenv(registry.ZOO_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(registry.ZOO_URL_ENV, raising=False)
    mirrored = {"format_version": 1, "models": {}, "base_url": "https://mirror.example/zoo/"}
    local = tmp_path.resolve().as_uri()
    assert registry.origin_url("weights/here.h5", mirrored) == f"{local}/weights/here.h5"
    assert (
        registry.origin_url("weights/gone.h5", mirrored)
        == "https://mirror.example/zoo/weights/gone.h5"
    )
    assert registry.origin_url("weights/gone.h5", {"models": {}}) == f"{local}/weights/gone.h5"
    monkeypatch.setenv(registry.ZOO_URL_ENV, "https://other.example/z")
    assert (
        registry.origin_url("weights/here.h5", mirrored)
        == "https://other.example/z/weights/here.h5"
    )
