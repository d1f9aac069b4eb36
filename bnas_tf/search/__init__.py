"""What exists only while searching: mixed ops, search cells, the supernet, search methods.

One paper idea per module: [`mixed_op`][bnas_tf.search.mixed_op] (DARTS mixed op with
PC-DARTS channel sampling), [`cell`][bnas_tf.search.cell],
[`supernet`][bnas_tf.search.supernet] (topology, alpha, genotype),
[`architect`][bnas_tf.search.architect] (the alternating update rule),
[`regularizers`][bnas_tf.search.regularizers] (Kim et al.'s entropy term),
[`reduction`][bnas_tf.search.reduction] (Chen et al.), [`child_parent`][bnas_tf.search.child_parent]
(CP-NAS), [`bmes`][bnas_tf.search.bmes] (BMES); [`methods`][bnas_tf.search.methods] puts the four
searches behind ``--method``.
"""

from bnas_tf.search.architect import Architect
from bnas_tf.search.cell import SearchCell, edge_inputs, num_edges
from bnas_tf.search.mixed_op import MixedOp, channel_shuffle
from bnas_tf.search.regularizers import entropy_coefficient, mean_edge_entropy
from bnas_tf.search.supernet import CELL_TYPES, Supernet, SupernetOptions, default_optimizers

__all__ = [
    "Architect",
    "CELL_TYPES",
    "MixedOp",
    "SearchCell",
    "Supernet",
    "SupernetOptions",
    "channel_shuffle",
    "default_optimizers",
    "edge_inputs",
    "entropy_coefficient",
    "mean_edge_entropy",
    "num_edges",
]
