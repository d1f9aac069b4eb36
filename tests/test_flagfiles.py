"""Every flagfile in flags/ parses with its program's flags into a valid config."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)
from bnas_tf.apps import common
from bnas_tf.apps import search as search_app
from bnas_tf.apps import train as train_app
from bnas_tf.search.driver import SearchConfig
from bnas_tf.training import TrainConfig

from pathlib import Path

import pytest
from absl import flags

FLAGFILES = sorted(  # bnas-tune's tune_*.cfg: tests/test_tuner.py
    p
    for p in (Path(__file__).resolve().parents[1] / "flags").glob("*.cfg")
    if not p.name.startswith("tune_")
)


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_parses_and_validates(path):
    # Training flagfiles: *train*.cfg and the zoo's training runs (zoo_*.cfg, bnas-train flags).
    is_train = "train" in path.name or path.name.startswith("zoo_")
    app, config_cls = (train_app, TrainConfig) if is_train else (search_app, SearchConfig)
    flag_values = flags.FlagValues()
    app.define_flags(flag_values)
    flag_values(["prog", f"--flagfile={path}", "--output_dir=unused"])
    config = common.config_from_flags(config_cls, flag_values).validate()
    # Every flag the file names differs from nothing silently: it was really read.
    named = [
        line.split("=")[0].lstrip("-")
        for line in path.read_text().splitlines()
        if line.startswith("--")
    ]
    assert named and all(
        name in flag_values or name.removeprefix("no") in flag_values for name in named
    )
    assert config.dataset in ("fashion_mnist", "cifar10")


def test_reference_flagfiles_hold_the_published_settings():
    flag_values = flags.FlagValues()
    search_app.define_flags(flag_values)
    flag_values(
        ["prog", f"--flagfile={FLAGFILES[0].parent / 'search_cifar10.cfg'}", "--output_dir=unused"]
    )
    config = common.config_from_flags(SearchConfig, flag_values)
    # Kim et al. / DARTS: 8 cells, 16 channels, batch 64, 50 epochs, lambda 1.0, tau 7.7.
    assert (config.layers, config.init_channels, config.batch_size, config.epochs) == (
        8,
        16,
        64,
        50,
    )
    assert (config.entropy_lambda, config.entropy_tau) == (1.0, 7.7)
    chen = flags.FlagValues()
    search_app.define_flags(chen)
    chen(
        [
            "prog",
            f"--flagfile={FLAGFILES[0].parent / 'search_cifar10_chen.cfg'}",
            "--output_dir=unused",
        ]
    )
    config = common.config_from_flags(SearchConfig, chen)
    assert config.search_space == "bnas_darts" and config.partial_channels == 4
    assert config.method == "reduction" and not config.allow_none
    # XNOR-Net with its activation scaling; PC-DARTS' alpha warm-up (epoch 15 of 50).
    assert config.binarization == "xnor" and config.xnor_activation_scale
    assert config.arch_warmup_epochs == 15


@pytest.mark.parametrize(
    "name,warmup", [("search_cifar10_chen.cfg", 15), ("search_fashion_mnist_chen.cfg", 4)]
)
def test_chen_flagfiles_cite_a_source_for_every_setting(name, warmup):
    """Each flag of the Chen et al. files is preceded by a comment naming its source."""
    path = FLAGFILES[0].parent / name
    lines = path.read_text().splitlines()
    sources = {"[C]", "[P]", "[X]", "[D]"}
    cited, previous_flag = False, True
    for line in lines:
        if line.startswith("#"):  # a new comment block starts after a flag
            cited = (False if previous_flag else cited) or any(s in line for s in sources)
            previous_flag = False
        elif line.startswith("--"):
            previous_flag = True
            if not line.startswith(("--dataset", "--limit", "--seed")):
                assert cited, f"{name}: {line} has no cited source in the comment above it"
    flag_values = flags.FlagValues()
    search_app.define_flags(flag_values)
    flag_values(["prog", f"--flagfile={path}", "--output_dir=unused"])
    config = common.config_from_flags(SearchConfig, flag_values)
    assert config.xnor_activation_scale and config.arch_warmup_epochs == warmup
    # the warm-up ends inside the search: alpha is trained in the later stages
    assert warmup < 7 * config.reduction.stage_epochs
