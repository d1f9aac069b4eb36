"""The search methods behind ``bnas-search --method=NAME``: one class each, one small protocol.

| ``--method`` | paper | what it searches, how | result |
|---|---|---|---|
| ``darts`` | Kim et al., ECCV 2020; plain binary DARTS | cell; alpha / weight steps | cell |
| ``reduction`` | Chen et al., AAAI 2020 | cell; operation space reduction | cell |
| ``cp_nas`` | Zhuo et al., IJCAI 2020 | cell; binary child, float parent | cell |
| ``bmes`` | Phan et al., CVPR 2020 | MobileNet group counts; evolution | group list |

A method takes the whole [`SearchConfig`][bnas_tf.search.driver.SearchConfig] (its own settings
are the nested ``config.<method>``) and a run directory, checkpoints as it goes so that
``resume=True`` continues a killed run, writes ``genotype.json`` and ``metrics.json``, and returns
a result with ``genotype`` and ``wall_time``:

```python
from bnas_tf.search.driver import SearchConfig
from bnas_tf.search.methods import run_method
result = run_method(SearchConfig(method="cp_nas", layers=3, init_channels=8, limit=2000), "runs/cp")
print(result.genotype)
```

A new method is a class with ``name``, ``summary(result)`` and ``run(config, output_dir, *,
resume, log, strategy)`` added to ``METHODS`` (and its name to ``driver.METHOD_NAMES``).
"""

from __future__ import annotations

from bnas_tf.search import driver

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import tensorflow as tf

__all__ = ["SearchMethod", "METHODS", "get_method", "run_method"]


class SearchMethod(Protocol):
    """What ``bnas-search`` needs of a search method."""

    name: str
    citation: str

    def run(
        self,
        config: driver.SearchConfig,
        output_dir: str | Path,
        *,
        resume: bool = False,
        log: Callable[[str], Any] = print,
        strategy: tf.distribute.Strategy | None = None,
    ) -> Any:
        """Search; write ``genotype.json`` and ``metrics.json`` to ``output_dir``; return a result
        with ``genotype`` and ``wall_time``."""

    def summary(self, result: Any) -> str:
        """One line for the program's output."""


def _budget(result) -> str:
    """``"; at the final size ops: ... (8.4 % under)"`` for a budgeted search (and ``"; fitted:
    14 channels (genotype_fit.json)"`` with ``--fit_width``), else ``""``."""
    from bnas_tf.search.budget import describe

    if not result.budget:
        return ""
    fitted = ""
    if result.budget_fit:
        channels = result.budget_fit["init_channels"]
        fitted = (
            f"; fitted: {channels} channels (genotype_fit.json)"
            if channels
            else "; no width fits it"
        )
    return f"; at the final size {describe(result.budget)}{fitted}"


class Darts:
    """DARTS over binarized ops: Kim et al.'s search (entropy term, Zeroise) or plain binary
    DARTS; first or second order ([`run_search`][bnas_tf.search.driver.run_search])."""

    name = "darts"
    citation = "Liu et al., ICLR 2019; Kim, Singh, Choi, ECCV 2020"

    def run(self, config, output_dir, *, resume=False, log=print, strategy=None):
        return driver.run_search(config, output_dir, resume=resume, strategy=strategy)

    def summary(self, result) -> str:
        return f"epoch {result.best_epoch}, {result.wall_time:.0f} s{_budget(result)}"


class Reduction:
    """Chen et al.'s operation space reduction
    ([`run_reduction_search`][bnas_tf.search.reduction_search.run_reduction_search])."""

    name = "reduction"
    citation = "Chen, Zhuo, Zhang, Doermann, AAAI 2020"

    def run(self, config, output_dir, *, resume=False, log=print, strategy=None):
        from bnas_tf.search.reduction_search import run_reduction_search

        return run_reduction_search(config, output_dir, resume=resume, log=log)

    def summary(self, result) -> str:
        return f"{len(result.stages)} stages, {result.wall_time:.0f} s{_budget(result)}"


class ChildParent(Reduction):
    """CP-NAS: the reduction's stages with a full-precision parent
    ([`bnas_tf.search.child_parent`][bnas_tf.search.child_parent])."""

    name = "cp_nas"
    citation = "Zhuo et al., IJCAI 2020"


class Bmes:
    """BMES: evolution over a binary MobileNet's group counts
    ([`run_bmes_search`][bnas_tf.search.bmes.run_bmes_search])."""

    name = "bmes"
    citation = "Phan et al., CVPR 2020"

    def run(self, config, output_dir, *, resume=False, log=print, strategy=None):
        from bnas_tf.search.bmes import run_bmes_search

        return run_bmes_search(config, output_dir, resume=resume, log=log)

    def summary(self, result) -> str:
        return (
            f"validation accuracy {result.accuracy:.4f} with shared weights, {result.ops:.0f} "
            f"OPs, {result.wall_time:.0f} s"
        )


METHODS: dict[str, SearchMethod] = {
    m.name: m for m in (Darts(), Reduction(), ChildParent(), Bmes())
}
assert tuple(METHODS) == driver.METHOD_NAMES


def get_method(name: str) -> SearchMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}.") from None


def run_method(
    config: driver.SearchConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    log: Callable[[str], Any] = print,
    strategy: tf.distribute.Strategy | None = None,
) -> Any:
    """Run ``config.method`` (see the table above)."""
    return get_method(config.method).run(
        config, output_dir, resume=resume, log=log, strategy=strategy
    )
