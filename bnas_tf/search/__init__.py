"""What exists only while searching: mixed ops, search cells, the supernet, search strategies.

One paper idea per module: [`mixed_op`][bnas_tf.search.mixed_op] (DARTS mixed op with
PC-DARTS channel sampling), [`cell`][bnas_tf.search.cell],
[`supernet`][bnas_tf.search.supernet] (the alternating ``train_step``),
[`regularizers`][bnas_tf.search.regularizers] (Kim et al.'s entropy term).
"""

from bnas_tf.search.cell import SearchCell, edge_inputs, num_edges
from bnas_tf.search.mixed_op import MixedOp, channel_shuffle
from bnas_tf.search.regularizers import entropy_coefficient, mean_edge_entropy
from bnas_tf.search.supernet import CELL_TYPES, Supernet, default_optimizers

__all__ = [
    "CELL_TYPES",
    "MixedOp",
    "SearchCell",
    "Supernet",
    "channel_shuffle",
    "default_optimizers",
    "edge_inputs",
    "entropy_coefficient",
    "mean_edge_entropy",
    "num_edges",
]
