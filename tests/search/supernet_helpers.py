"""Tests build supernets from one flat set of keyword arguments, as they did before the update
rule moved into ``Architect`` and the speed options into ``SupernetOptions``."""

import bnas_tf  # noqa: F401  (must come before tensorflow)
from bnas_tf.search.architect import Architect
from bnas_tf.search.supernet import Supernet, SupernetOptions

import dataclasses

ARCHITECT = {f.name for f in dataclasses.fields(Architect)}
OPTIONS = {f.name for f in dataclasses.fields(SupernetOptions)}


def make_supernet(num_classes: int, **kwargs) -> Supernet:
    """``Supernet(num_classes, ...)`` with the architect's settings kept on ``net.architect``
    (``compile(..., architect=net.architect)`` uses them) and the options in ``options``."""
    architect = Architect(**{k: kwargs.pop(k) for k in list(kwargs) if k in ARCHITECT})
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIONS}
    net = Supernet(num_classes, options=SupernetOptions(**options), **kwargs)
    net.architect = architect
    return net
