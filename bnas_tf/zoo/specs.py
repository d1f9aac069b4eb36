"""What each zoo model is: its cell, its reference configuration and its source.

A zoo model has a *reference configuration* (what ``weights=None`` builds) and any
number of *trained instances* (weights names in the registry, each fixing the
architecture it was trained at, see [`bnas_tf.zoo.registry`][bnas_tf.zoo.registry]).

Reference configurations (Kim, Singh, Choi, "Learning Architectures for Binary
Networks", ECCV 2020, https://arxiv.org/abs/2002.06963, code
https://github.com/gistvision/bnas):

========  ===========  =====  ========  ====  ==================  ==============
model     cell         cells  channels  stem  input, classes      source
========  ===========  =====  ========  ====  ==================  ==============
BNASA     bnas_a       20     36        cifar (32, 32, 3), 10     paper (CIFAR-10)
BNASB     bnas_a       8      24        cifar (28, 28, 1), 10     trained here
BNASC     bnas_a       8      32        cifar (28, 28, 1), 10     trained here
BNASD     latest_cell  12     64        imnet (224, 224, 3), 1000 reference code
BNASE     latest_cell  12     68        imnet (224, 224, 3), 1000 reference code
BNASF     latest_cell  15     68        imnet (224, 224, 3), 1000 reference code
BNASG     latest_cell  11     74        imnet (224, 224, 3), 1000 reference code
BNASH     latest_cell  16     128       imnet (224, 224, 3), 1000 reference code
BNASXNOR  bnas_xnor_1  20     36        cifar (32, 32, 3), 10     Chen et al. (CIFAR-10)
BNASFM    searched     registry                                   trained here
========  ===========  =====  ========  ====  ==================  ==============

For BNASB, BNASC and BNASFM the reference *is* the trained instance: once their
``fashion_mnist`` weights are published, the registry entry's architecture is the
reference (the numbers above are what B and C are trained at; see ``B_C_CHOICE``).
"""

from __future__ import annotations

from bnas_tf import data as data_lib
from bnas_tf import genotype as genotype_lib

import dataclasses

__all__ = ["ModelInfo", "MODELS", "KIM", "CHEN", "B_C_CHOICE", "WEIGHTS_DECISION", "reference_spec"]

KIM = (
    'Dahyun Kim, Kunal Pratap Singh, Jonghyun Choi. "Learning Architectures for Binary '
    'Networks". ECCV 2020. https://arxiv.org/abs/2002.06963; code https://github.com/gistvision/bnas'
)
CHEN = (
    "Hanlin Chen, Li'an Zhuo, Baochang Zhang, Xiawu Zheng, Jianzhuang Liu, David Doermann, "
    'Rongrong Ji. "Binarized Neural Architecture Search". AAAI 2020. https://arxiv.org/abs/1911.10862'
)
PROJECT = (
    "bnas-tf: this project's own search (bnas-search) on Fashion-MNIST, trained with bnas-train."
)

#: Why BNASB and BNASC have the sizes they have (written into their model cards).
B_C_CHOICE = (
    "Kim et al. report BNAS-B (93.76 %) and BNAS-C (94.43 %) on CIFAR-10 with the same searched "
    "cell as BNAS-A but do not publish their depth and width. Here B and C keep BNAS-A's cell "
    "(`latest_cell_zeroise`, inter-cell skips, sign_scale binarization, CIFAR stem) and grow the "
    "network, since the published results grow with model size: B = 8 cells x 24 channels (about "
    "1.2 M parameters), C = 8 cells x 32 channels (about 2.1 M), both larger than the "
    "Fashion-MNIST BNASA instance (6 cells x 16 channels). The bound is practical: each must "
    "train on a 2-core CPU in hours, and every published instance costs 8 bytes per parameter "
    "(full and notop float32 latent weights), within the zoo's 60 MB budget. Their reference "
    "configuration is the one trained here: when the `fashion_mnist` weights are published, the "
    "registry entry's architecture is the reference (`weights=None` builds it)."
)

#: The weights-name decision, written into every card and docs/zoo.md.
WEIGHTS_DECISION = (
    "A weights name (e.g. `fashion_mnist`) selects a trained instance; its registry entry fixes "
    "the architecture it was trained at (cells, channels, stem, binarization, input shape, "
    "classes). `weights=None` builds the model's reference configuration. A weights *file* "
    "path builds the reference configuration and loads the file into it; a `bnas-train` run "
    "*directory* (holding `network.json` and `weights.h5`) builds the run's own architecture."
)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A zoo model: its cell and reference configuration.

    Attributes:
        name: the function's name (``"BNASB"``).
        genotype: a name in [`PUBLISHED`][bnas_tf.genotype.PUBLISHED], or None when the cell
            comes from the registry (the project's searched model).
        layers, init_channels, stem, binarization: the reference network.
        dataset: the reference dataset (input shape and number of classes).
        inter_cell_skip: Kim et al.'s inter-cell skips (DARTS' template has none).
        default_weights: the ``weights`` default of the model function.
        reference_weights: a weights name whose registry entry, once published,
            *is* the reference configuration (models whose size is chosen here).
        citation: where the cell and configuration come from.
        description: one paragraph for the card.
        paper: published results (text, with the source).
    """

    name: str
    genotype: str | None
    layers: int | None
    init_channels: int | None
    stem: str
    binarization: str
    dataset: str
    citation: str
    description: str
    paper: str = ""
    inter_cell_skip: bool = True
    default_weights: str | None = None
    reference_weights: str | None = None

    @property
    def num_classes(self) -> int:
        return data_lib.info(self.dataset).num_classes


def _kim_imagenet(letter: str, layers: int, channels: int, top1: float, top5: float) -> ModelInfo:
    return ModelInfo(
        name=f"BNAS{letter}",
        genotype="latest_cell",
        layers=layers,
        init_channels=channels,
        stem="imagenet",
        binarization="sign_scale",
        dataset="imagenet2012",
        citation=KIM,
        description=(
            f"Kim et al.'s ImageNet model BNAS-{letter}: the searched cell `latest_cell`, "
            f"{layers} cells x {channels} channels (configuration from the reference code "
            "gistvision/bnas), three full-precision stride-2 stem convolutions."
        ),
        paper=f"ImageNet top-1 {top1} %, top-5 {top5} % (Kim et al., ECCV 2020).",
    )


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            name="BNASA",
            genotype="bnas_a",
            layers=20,
            init_channels=36,
            stem="cifar",
            binarization="sign_scale",
            dataset="cifar10",
            citation=KIM,
            description=(
                "Kim et al.'s CIFAR-10 model BNAS-A: the cell `latest_cell_zeroise` (Zeroise "
                "edges kept), 20 cells x 36 channels, CIFAR stem, inter-cell skips."
            ),
            paper="CIFAR-10 top-1 92.70 % (reproduced 92.39 %), about 5.58 M parameters "
            "(Kim et al., ECCV 2020).",
            default_weights="fashion_mnist",
        ),
        ModelInfo(
            name="BNASB",
            genotype="bnas_a",
            layers=8,
            init_channels=24,
            stem="cifar",
            binarization="sign_scale",
            dataset="fashion_mnist",
            citation=KIM,
            description="BNAS-B: BNAS-A's cell in a larger network (size chosen here). "
            + B_C_CHOICE,
            paper="CIFAR-10 top-1 93.76 % at an unpublished size (Kim et al., ECCV 2020).",
            default_weights="fashion_mnist",
            reference_weights="fashion_mnist",
        ),
        ModelInfo(
            name="BNASC",
            genotype="bnas_a",
            layers=8,
            init_channels=32,
            stem="cifar",
            binarization="sign_scale",
            dataset="fashion_mnist",
            citation=KIM,
            description="BNAS-C: BNAS-A's cell in a still larger network (size chosen here). "
            + B_C_CHOICE,
            paper="CIFAR-10 top-1 94.43 % at an unpublished size (Kim et al., ECCV 2020).",
            default_weights="fashion_mnist",
            reference_weights="fashion_mnist",
        ),
        _kim_imagenet("D", 12, 64, 57.69, 79.89),
        _kim_imagenet("E", 12, 68, 58.76, 80.61),
        _kim_imagenet("F", 15, 68, 58.99, 80.85),
        _kim_imagenet("G", 11, 74, 59.81, 81.61),
        _kim_imagenet("H", 16, 128, 63.51, 83.91),
        ModelInfo(
            name="BNASXNOR",
            genotype="bnas_xnor_1",
            layers=20,
            init_channels=36,
            stem="cifar",
            binarization="xnor",
            dataset="cifar10",
            citation=CHEN,
            description=(
                "Chen et al.'s published XNOR cell `BNAS_XNOR_1` (binarized DARTS space), "
                "20 cells x 36 channels as evaluated in the paper, XNOR-Net binarization, in "
                "the DARTS network template of their code (no inter-cell skips; their "
                "auxiliary head is a training aid and is not part of the zoo model)."
            ),
            paper="CIFAR-10 top-1 96.53 % with XNOR (Chen et al., AAAI 2020).",
            inter_cell_skip=False,
        ),
        ModelInfo(
            name="BNASFM",
            genotype=None,
            layers=None,
            init_channels=None,
            stem="cifar",
            binarization="sign_scale",
            dataset="fashion_mnist",
            citation=PROJECT,
            description=(
                "This project's own cell, searched by `bnas-search` on Fashion-MNIST (Kim et "
                "al.'s space and entropy regularizer) and trained by `bnas-train`. Its cell and "
                "configuration are those of its published `fashion_mnist` instance."
            ),
            default_weights="fashion_mnist",
            reference_weights="fashion_mnist",
        ),
    )
}


def reference_spec(info: ModelInfo) -> dict:
    """The ``network.json``-style spec of ``info``'s coded reference configuration.

    Raises:
        ValueError: the model's cell is defined only by its published instance.
    """
    if info.genotype is None or info.layers is None:
        raise ValueError(
            f"{info.name}'s cell and size are defined by its published "
            f"{info.reference_weights!r} weights, which the registry does not hold yet; publish "
            f"them with `bnas-publish --run_dir RUN --name {info.name}`."
        )
    meta = data_lib.info(info.dataset)
    return {
        "genotype": genotype_lib.get(info.genotype).to_dict(),
        "layers": info.layers,
        "init_channels": info.init_channels,
        "num_classes": meta.num_classes,
        "input_shape": list(meta.input_shape),
        "stem": info.stem,
        "binarization": info.binarization,
        "inter_cell_skip": info.inter_cell_skip,
        "stride2_grid": "same",
        "dataset": info.dataset,
    }
