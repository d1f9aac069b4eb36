"""Cell genotypes: the discrete architecture a search produces.

A ``Genotype`` describes the two cell types of a DARTS-style network, the
*normal* cell and the *reduction* cell. Each cell has ``STEPS = 4`` intermediate
nodes and every intermediate node sums exactly two edges. Node indices follow
DARTS:

* ``0`` is ``c_{k-2}`` (the output of the cell before the previous one),
* ``1`` is ``c_{k-1}`` (the output of the previous cell),
* ``2 .. 5`` are the four intermediate nodes.

Edges ``2*i`` and ``2*i + 1`` feed intermediate node ``i + 2`` and may read from
any node ``0 .. i + 1``. The cell output ``c_{k}`` concatenates the nodes listed
in ``normal_concat`` / ``reduce_concat`` (normally ``2, 3, 4, 5``).

Example:

```python
>>> from bnas_tf import genotype
>>> g = genotype.get("bnas_a")                 # a published genotype
>>> g.ops("normal")["none"]
6
>>> text = g.to_json()                         # JSON round trip
>>> genotype.Genotype.from_json(text) == g
True
>>> darts_v2 = genotype.Genotype.from_darts_string(
...     open("darts_v2.txt").read(),           # "Genotype(normal=[...], ...)"
...     search_space="bnas_darts",
...     rename=genotype.DARTS_RENAME,          # sep_conv_3x3 -> bin_sep_conv_3x3, ...
... )  # doctest: +SKIP
>>> genotype.plot(g, "bnas_a.png")             # doctest: +SKIP
'bnas_a.png'

```

The module is pure Python: matplotlib/numpy are imported only by the plotting
helpers and TensorFlow only by ``tensorboard_image``.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    from matplotlib.figure import Figure

__all__ = [
    "BNAS_A",
    "BNAS_XNOR_1",
    "CELL_TYPES",
    "DARTS_RENAME",
    "EDGES_PER_NODE",
    "Edge",
    "Genotype",
    "LATEST_CELL",
    "PUBLISHED",
    "STEPS",
    "from_dict",
    "get",
    "plot",
    "plot_to_array",
    "tensorboard_image",
]

Edge = tuple[str, int]
"""One edge of a cell: ``(op name, input node index)``."""

PathLike = Union[str, "os.PathLike[str]"]

STEPS = 4
"""Intermediate nodes per cell."""
EDGES_PER_NODE = 2
"""Edges summed by every intermediate node."""
NUM_EDGES = STEPS * EDGES_PER_NODE
CONCAT_RANGE = range(2, STEPS + 2)
"""Node indices a cell output may concatenate."""
CELL_TYPES = ("normal", "reduce")

DARTS_RENAME: dict[str, str] = {
    "sep_conv_3x3": "bin_sep_conv_3x3",
    "sep_conv_5x5": "bin_sep_conv_5x5",
    "dil_conv_3x3": "bin_dil_sep_conv_3x3",
    "dil_conv_5x5": "bin_dil_sep_conv_5x5",
}
"""Rename map from the DARTS op names to this package's binarized ops
(``bnas_darts`` space), for ``Genotype.from_darts_string``."""

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat", "search_space")
_REQUIRED = _FIELDS[:4]


def _registry() -> tuple[tuple[str, ...], Mapping[str, tuple[str, ...]]]:
    """``(OP_NAMES, SEARCH_SPACES)`` of [`bnas_tf.ops`][bnas_tf.ops], read at call time."""
    from bnas_tf import ops

    return tuple(ops.OP_NAMES), ops.SEARCH_SPACES


def _cell_name(cell: str) -> str:
    return f"{cell} cell"


def _check_cell_arg(cell: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if cell not in allowed:
        raise ValueError(f"cell must be one of {', '.join(map(repr, allowed))}; got {cell!r}")


def _as_edges(value: Any) -> Any:
    """Lists (from JSON) and nested per-node lists (pt.darts style) -> tuple of edges."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return value  # rejected by validate() with a clear message
    items = list(value)
    # pt.darts writes one list of two edges per node: [[(op, i), (op, j)], ...].
    if items and all(
        isinstance(node, (list, tuple)) and node and all(isinstance(e, (list, tuple)) for e in node)
        for node in items
    ):
        items = [edge for node in items for edge in node]
    return tuple(tuple(e) if isinstance(e, list) else e for e in items)


def _as_concat(value: Any) -> Any:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """The discrete normal and reduction cells of a DARTS-style network.

    Args:
        normal: 8 ``(op, input)`` edges of the normal cell; edges ``2i, 2i+1``
            feed intermediate node ``i`` (DARTS index ``i + 2``).
        normal_concat: node indices (``2..5``) concatenated into the cell output.
        reduce: 8 edges of the reduction cell.
        reduce_concat: node indices concatenated by the reduction cell.
        search_space: optional name of a space in ``bnas_tf.ops.SEARCH_SPACES``;
            when set, every op must belong to it.

    Lists are converted to tuples, so ``Genotype(**json.load(f))`` works and the
    result is hashable. Construction validates (see ``validate``) and raises
    ``ValueError`` on any inconsistency.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    search_space: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _as_edges(self.normal))
        object.__setattr__(self, "reduce", _as_edges(self.reduce))
        object.__setattr__(self, "normal_concat", _as_concat(self.normal_concat))
        object.__setattr__(self, "reduce_concat", _as_concat(self.reduce_concat))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, search_space: str | None = None) -> Genotype:
        """Check the genotype; return ``self`` so calls can be chained.

        Args:
            search_space: check the ops against this space instead of the
                ``search_space`` field. With neither, ops must be in
                ``bnas_tf.ops.OP_NAMES``.

        Raises:
            ValueError: naming the cell, edge, node and offending value, e.g.
                ``"reduce cell, edge 5 (node 4): input 6 out of range 0..3"``.
        """
        op_names, spaces = _registry()
        space = search_space if search_space is not None else self.search_space
        if space is not None and not isinstance(space, str):
            raise ValueError(f"search_space must be a string or None, got {space!r}")
        if space is not None and space not in spaces:
            raise ValueError(f"unknown search space {space!r}; known: {', '.join(sorted(spaces))}")
        allowed = tuple(spaces[space]) if space is not None else op_names
        for cell in CELL_TYPES:
            self._validate_edges(cell, getattr(self, cell), space, allowed, op_names)
            self._validate_concat(cell, getattr(self, f"{cell}_concat"))
        return self

    @staticmethod
    def _validate_edges(
        cell: str,
        edges: Any,
        space: str | None,
        allowed: tuple[str, ...],
        op_names: tuple[str, ...],
    ) -> None:
        name = _cell_name(cell)
        if not isinstance(edges, tuple):
            raise ValueError(f"{name}: expected a sequence of (op, input) edges, got {edges!r}")
        if len(edges) != NUM_EDGES:
            raise ValueError(
                f"{name}: expected {NUM_EDGES} edges ({EDGES_PER_NODE} per node for "
                f"{STEPS} nodes), got {len(edges)}"
            )
        for index, edge in enumerate(edges):
            node = index // EDGES_PER_NODE + 2
            where = f"{name}, edge {index} (node {node})"
            if not isinstance(edge, tuple) or len(edge) != 2:
                raise ValueError(f"{where}: expected an (op, input) pair, got {edge!r}")
            op, src = edge
            if not isinstance(op, str):
                raise ValueError(f"{where}: op name must be a string, got {op!r}")
            if op not in op_names:
                raise ValueError(f"{where}: unknown op {op!r}; known ops: {', '.join(op_names)}")
            if op not in allowed:
                hint = ""
                if space == "bnas_darts" and op.startswith("bin_dil_conv"):
                    hint = (
                        "; DARTS' dil_conv is the dilated separable "
                        f"{op.replace('dil_conv', 'dil_sep_conv')} since bnas-tf 0.2. A genotype "
                        "saved before that used the dense dilated convolution: load it with "
                        "search_space=None to rebuild it as trained"
                    )
                raise ValueError(
                    f"{where}: op {op!r} is not in search space {space!r} "
                    f"(allowed: {', '.join(allowed)}){hint}"
                )
            if not _is_int(src):
                raise ValueError(f"{where}: input must be an int, got {src!r}")
            if not 0 <= src < node:
                raise ValueError(f"{where}: input {src} out of range 0..{node - 1}")

    @staticmethod
    def _validate_concat(cell: str, concat: Any) -> None:
        name = f"{_cell_name(cell)} concat"
        if not isinstance(concat, tuple):
            raise ValueError(f"{name}: expected a sequence of node indices, got {concat!r}")
        if not concat:
            raise ValueError(f"{name}: must not be empty")
        seen: set[int] = set()
        for node in concat:
            if not _is_int(node):
                raise ValueError(f"{name}: node index must be an int, got {node!r}")
            if node not in CONCAT_RANGE:
                raise ValueError(
                    f"{name}: node {node} out of range "
                    f"{CONCAT_RANGE.start}..{CONCAT_RANGE.stop - 1}"
                )
            if node in seen:
                raise ValueError(f"{name}: duplicate node {node}")
            seen.add(node)

    # -------------------------------------------------------------- queries
    def ops(self, cell: str = "both") -> collections.Counter[str]:
        """Count op names in ``"normal"``, ``"reduce"`` or ``"both"`` cells."""
        _check_cell_arg(cell, (*CELL_TYPES, "both"))
        cells = CELL_TYPES if cell == "both" else (cell,)
        return collections.Counter(op for c in cells for op, _ in getattr(self, c))

    # ------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: edges as ``[op, input]`` lists."""
        return {
            "normal": [[op, src] for op, src in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, src] for op, src in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "search_space": self.search_space,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        """Build from ``to_dict`` output; unknown or missing keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise ValueError(f"genotype must be a JSON object / mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_FIELDS), key=str)
        if unknown:
            raise ValueError(
                f"genotype has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(_FIELDS)}"
            )
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"genotype is missing key(s) {', '.join(map(repr, missing))}")
        return cls(**{k: d[k] for k in _FIELDS if k in d})

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text; with an ``indent`` every edge sits on its own line."""
        d = self.to_dict()
        if indent is None:
            return json.dumps(d)
        pad = " " * indent
        lines = ["{"]
        for i, key in enumerate(_FIELDS):
            comma = "," if i < len(_FIELDS) - 1 else ""
            value = d[key]
            if key in CELL_TYPES:
                edges = [pad * 2 + json.dumps(e) for e in value]
                lines.append(f"{pad}{json.dumps(key)}: [")
                lines.append(",\n".join(edges))
                lines.append(f"{pad}]{comma}")
            else:
                lines.append(f"{pad}{json.dumps(key)}: {json.dumps(value)}{comma}")
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Genotype:
        """Parse ``to_json`` output; malformed JSON raises ValueError with the position."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"malformed genotype JSON: {e.msg} at line {e.lineno} column {e.colno} "
                f"(char {e.pos})"
            ) from None
        return cls.from_dict(data)

    def save(self, path: PathLike) -> PathLike:
        """Write ``to_json`` to ``path`` atomically (temp file + ``os.replace``)."""
        target = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(target))
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    @classmethod
    def load(cls, path: PathLike) -> Genotype:
        """Read a genotype JSON file.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is not a valid genotype (message names ``path``).
        """
        target = os.fspath(path)
        try:
            with open(target, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(2, "genotype file not found", target) from None
        try:
            return _from_json(text) if cls is Genotype else cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{target}: {e}") from e

    # ---------------------------------------------------------------- DARTS
    def __str__(self) -> str:
        """DARTS-style repr, accepted by ``from_darts_string``."""

        def concat(c: tuple[int, ...]) -> str:
            if len(c) > 1 and c == tuple(range(c[0], c[-1] + 1)):
                return f"range({c[0]}, {c[-1] + 1})"
            return repr(list(c))

        text = (
            f"Genotype(normal={list(self.normal)!r}, normal_concat={concat(self.normal_concat)}, "
            f"reduce={list(self.reduce)!r}, reduce_concat={concat(self.reduce_concat)}"
        )
        if self.search_space is not None:
            text += f", search_space={self.search_space!r}"
        return text + ")"

    @classmethod
    def from_darts_string(
        cls,
        text: str,
        search_space: str | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> Genotype:
        """Parse a DARTS ``Genotype(...)`` repr without ``eval``.

        Accepts the ``namedtuple`` repr of quark0/darts (keyword or positional
        fields, optionally ``NAME = Genotype(...)``), ``range(a, b)`` concats and
        pt.darts-style per-node nested edge lists. Only literals and ``range``
        calls are evaluated (via ``ast.literal_eval``); anything else, such
        as a function call, raises ``ValueError``.

        Args:
            text: the DARTS repr.
            search_space: validate against this space (overrides a
                ``search_space=`` in ``text``).
            rename: op renames applied before validation, e.g.
                ``DARTS_RENAME`` to map DARTS ops to binarized ops.
        """
        if not isinstance(text, str):
            raise ValueError(f"expected a DARTS genotype string, got {type(text).__name__}")
        try:
            module = ast.parse(text.strip(), mode="exec")
        except SyntaxError as e:
            raise ValueError(
                f"malformed DARTS genotype string: {e.msg} (line {e.lineno})"
            ) from None
        body = module.body
        node: ast.AST | None = None
        if len(body) == 1 and isinstance(body[0], ast.Expr):
            node = body[0].value
        elif len(body) == 1 and isinstance(body[0], ast.Assign) and len(body[0].targets) == 1:
            node = body[0].value
        func = getattr(node, "func", None)
        func_name = (
            func.id
            if isinstance(func, ast.Name)
            else func.attr
            if isinstance(func, ast.Attribute)
            else None
        )
        if not isinstance(node, ast.Call) or func_name != "Genotype":
            raise ValueError("expected a single 'Genotype(...)' expression")
        if len(node.args) > len(_REQUIRED):
            raise ValueError(f"Genotype(...) takes at most {len(_REQUIRED)} positional fields")
        fields: dict[str, Any] = {}
        for key, arg in zip(_REQUIRED, node.args):
            fields[key] = _literal(arg, key)
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError("'**' arguments are not supported in a DARTS genotype string")
            if kw.arg in fields:
                raise ValueError(f"field {kw.arg!r} given twice")
            fields[kw.arg] = _literal(kw.value, kw.arg)
        if search_space is not None:
            fields["search_space"] = search_space
        if rename:
            for cell in CELL_TYPES:
                if cell in fields:
                    edges = _as_edges(fields[cell])
                    if isinstance(edges, tuple):
                        fields[cell] = tuple(
                            (rename.get(e[0], e[0]), *e[1:])
                            if isinstance(e, tuple) and e and isinstance(e[0], str)
                            else e
                            for e in edges
                        )
        return cls.from_dict(fields)


def _literal(node: ast.expr, field: str) -> Any:
    """Evaluate a literal or a ``range(...)`` call of int literals."""
    if isinstance(node, ast.Call):
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "range"
            and not node.keywords
            and 1 <= len(node.args) <= 3
        ):
            args = [_literal(a, field) for a in node.args]
            if all(_is_int(a) for a in args):
                return tuple(range(*args))
        raise ValueError(
            f"field {field!r}: only literals and range(a, b) are allowed, got {ast.unparse(node)!r}"
        )
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(
            f"field {field!r}: not a literal value: {ast.unparse(node)[:200]!r}"
        ) from None


# ---------------------------------------------------------------------------
# Published genotypes
# ---------------------------------------------------------------------------

# Kim, Singh, Choi, "Learning Architectures for Binary Networks", ECCV 2020.
# github.com/gistvision/bnas, src/genotypes.py, `latest_cell_zeroise` (the CIFAR
# BNAS-A cell; the Zeroise ("none") edges are kept as searched).
BNAS_A = Genotype(
    normal=(
        ("none", 1),
        ("bin_dil_conv_3x3", 0),
        ("bin_conv_3x3", 1),
        ("none", 2),
        ("none", 2),
        ("none", 3),
        ("none", 3),
        ("none", 4),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("none", 1),
        ("max_pool_3x3", 0),
        ("none", 2),
        ("none", 3),
        ("none", 2),
        ("none", 3),
        ("none", 4),
    ),
    reduce_concat=(2, 3, 4, 5),
    search_space="bnas_kim",
)

# Kim, Singh, Choi, ECCV 2020 (as above), github.com/gistvision/bnas,
# src/genotypes.py, `latest_cell`: the cell of the ImageNet models BNAS-D..H.
LATEST_CELL = Genotype(
    normal=(
        ("bin_conv_3x3", 1),
        ("bin_dil_conv_3x3", 0),
        ("bin_conv_3x3", 1),
        ("bin_conv_3x3", 2),
        ("bin_conv_3x3", 2),
        ("bin_dil_conv_3x3", 1),
        ("bin_dil_conv_3x3", 1),
        ("bin_conv_3x3", 0),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("bin_conv_3x3", 2),
        ("max_pool_3x3", 0),
        ("bin_dil_conv_3x3", 3),
        ("max_pool_3x3", 0),
        ("bin_dil_conv_3x3", 4),
    ),
    reduce_concat=(2, 3, 4, 5),
    search_space="bnas_kim",
)

# Chen, Zhuo, Zhang, et al., "Binarized Neural Architecture Search", AAAI 2020.
# The published XNOR cell `BNAS_XNOR_1` from the authors' test code
# (utils/genotypes_x.py, used by test/test_xnor.py; pt.darts-style nested per-node
# lists, flattened here). DARTS op names are mapped to this package's binarized
# ops: sep_conv_k -> bin_sep_conv_k, dil_conv_k (DARTS' dilated separable DilConv)
# -> bin_dil_sep_conv_k.
BNAS_XNOR_1 = Genotype(
    normal=(
        ("skip_connect", 1),
        ("bin_dil_sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("bin_dil_sep_conv_5x5", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("bin_dil_sep_conv_5x5", 4),
        ("bin_sep_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("bin_sep_conv_3x3", 1),
        ("bin_dil_sep_conv_5x5", 0),
        ("skip_connect", 1),
        ("max_pool_3x3", 2),
        ("bin_dil_sep_conv_5x5", 0),
        ("avg_pool_3x3", 3),
        ("skip_connect", 2),
        ("bin_dil_sep_conv_3x3", 4),
    ),
    reduce_concat=(2, 3, 4, 5),
    search_space="bnas_darts",
)

PUBLISHED: dict[str, Genotype] = {
    "bnas_a": BNAS_A,
    "latest_cell": LATEST_CELL,
    "bnas_xnor_1": BNAS_XNOR_1,
}
"""Published genotypes by name (see ``get``)."""


def from_dict(d: dict):
    """A cell ``Genotype``, or a BMES ``GroupGenotype`` when the dict says ``"kind": "bmes"``
    (what a ``network.json`` holds under ``"genotype"`` for either kind of search).

    Example:
        >>> from_dict(BNAS_A.to_dict()) == BNAS_A
        True
        >>> from_dict({"kind": "bmes", "groups": [1, 2, 2, 4, 4, 8], "width": 8}).groups
        (1, 2, 2, 4, 4, 8)
    """
    from bnas_tf.mobilenet import GroupGenotype, is_group_genotype  # mobilenet builds on us

    return GroupGenotype.from_dict(d) if is_group_genotype(d) else Genotype.from_dict(d)


def _from_json(text: str):
    """A cell ``Genotype``, or a BMES ``GroupGenotype`` when the JSON says ``"kind": "bmes"``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    return from_dict(data) if isinstance(data, dict) else Genotype.from_json(text)


def get(name_or_path: str | os.PathLike[str] | Genotype) -> Genotype:
    """Resolve a published name, a ``.json`` file, a JSON string or a DARTS repr.

    A ``.json`` file or JSON string of a BMES group genotype (``"kind": "bmes"``) gives a
    [`GroupGenotype`][bnas_tf.mobilenet.GroupGenotype].

    Published names are matched case-insensitively (``-`` equals ``_``). A
    ``Genotype`` is returned unchanged.

    Raises:
        ValueError: an unknown name (the message lists ``PUBLISHED``) or
            invalid content.
        FileNotFoundError: a ``.json`` path that does not exist.
    """
    if isinstance(name_or_path, Genotype):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return Genotype.load(name_or_path)
    if not isinstance(name_or_path, str):
        raise ValueError(
            f"expected a genotype name, path or JSON string, got {type(name_or_path).__name__}"
        )
    text = name_or_path.strip()
    key = text.lower().replace("-", "_")
    if key in PUBLISHED:
        return PUBLISHED[key]
    if text.startswith("{"):
        return _from_json(text)
    if "Genotype(" in text:
        return Genotype.from_darts_string(text)
    if text.lower().endswith(".json") or os.path.isfile(text):
        return Genotype.load(text)
    raise ValueError(
        f"unknown genotype {name_or_path!r}: not a published name "
        f"({', '.join(PUBLISHED)}), an existing .json file or a JSON string"
    )


# ---------------------------------------------------------------------------
# Plotting
# ---------------------------------------------------------------------------

# Fixed colours (tab10 + extras) so an op has the same colour in every plot.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)
_OP_COLOURS_FIXED = {"none": "#9e9e9e", "skip_connect": "#2ca02c"}


def _op_colour(op: str) -> str:
    if op in _OP_COLOURS_FIXED:
        return _OP_COLOURS_FIXED[op]
    op_names, _ = _registry()
    others = [o for o in op_names if o not in _OP_COLOURS_FIXED]
    palette = [c for c in _PALETTE if c not in _OP_COLOURS_FIXED.values()]
    if op in others:
        return palette[others.index(op) % len(palette)]
    return "#000000"


_SPACING = 1.6  # horizontal distance between consecutive nodes (data units)
_NODE_RADIUS = 0.42
_Y_TOP = 3.0
_Y_BOTTOM = -2.1


def _node_positions() -> dict[int | str, tuple[float, float]]:
    """Arc-diagram layout: c_{k-2}, c_{k-1}, 0..3, c_{k} on one horizontal line."""
    pos: dict[int | str, tuple[float, float]] = {i: (_SPACING * i, 0.0) for i in range(STEPS + 2)}
    pos["out"] = (_SPACING * (STEPS + 2), 0.0)
    return pos


def _arc_rad(x1: float, x2: float, height: float) -> float:
    """``arc3`` curvature whose quadratic Bezier peaks ``height`` above the line."""
    # arc3 puts the control point at mid + rad * (dy, -dx); the curve's apex is
    # half-way to it. Negative heights bend the arc below the line.
    return -2.0 * height / (x2 - x1)


def _draw_cell(ax: Any, genotype: Genotype, cell: str) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    edges = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    pos = _node_positions()
    r = _NODE_RADIUS
    labels: dict[int | str, str] = {0: "$c_{k-2}$", 1: "$c_{k-1}$", "out": "$c_{k}$"}
    labels.update({i + 2: str(i) for i in range(STEPS)})
    patches = {}
    for key, (x, y) in pos.items():
        if key in (0, 1, "out"):
            colour = "#d9ead3" if key == "out" else "#cfe2f3"
            patch = FancyBboxPatch(
                (x - 1.2 * r, y - 0.75 * r),
                2.4 * r,
                1.5 * r,
                boxstyle="round,pad=0.02,rounding_size=0.15",
                facecolor=colour,
                edgecolor="#333333",
                linewidth=1.2,
                zorder=3,
            )
        else:
            patch = Circle(
                (x, y), r, facecolor="#fff2cc", edgecolor="#333333", linewidth=1.2, zorder=3
            )
        ax.add_patch(patch)
        patches[key] = patch
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=11, zorder=4)

    # Op edges are arcs above the node line: an arc's height grows with its span,
    # so it never passes through a node, and (source, target) fixes the label's
    # position; a repeated (source, target) pair is drawn higher.
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    for index, (op, src) in enumerate(edges):
        dst = index // EDGES_PER_NODE + 2
        (x1, y1), (x2, _) = pos[src], pos[dst]
        height = 0.6 + 0.42 * (dst - src - 1) + 0.45 * seen[(src, dst)]
        seen[(src, dst)] += 1
        colour = _op_colour(op)
        none = op == "none"
        ax.add_patch(
            FancyArrowPatch(
                (x1, y1),
                (x2, y1),
                patchA=patches[src],
                patchB=patches[dst],
                connectionstyle=f"arc3,rad={_arc_rad(x1, x2, height)}",
                arrowstyle="-|>",
                mutation_scale=14,
                color=colour,
                linewidth=1.0 if none else 1.8,
                linestyle=(0, (4, 3)) if none else "-",
                zorder=2,
            )
        )
        ax.text(
            (x1 + x2) / 2,
            y1 + height,
            op,
            ha="center",
            va="center",
            fontsize=7.5,
            color=colour,
            zorder=5,
            bbox=dict(
                boxstyle="round,pad=0.15",
                facecolor="white",
                edgecolor=colour,
                linewidth=0.6,
                alpha=0.95,
            ),
        )
    # The output concatenation: grey arcs below the line.
    x_out, y_out = pos["out"]
    for node in concat:
        x1, y1 = pos[node]
        height = -(0.5 + 0.3 * (STEPS + 1 - node))
        ax.add_patch(
            FancyArrowPatch(
                (x1, y1),
                (x_out, y_out),
                patchA=patches[node],
                patchB=patches["out"],
                connectionstyle=f"arc3,rad={_arc_rad(x1, x_out, height)}",
                arrowstyle="-|>",
                mutation_scale=12,
                color="#8c8c8c",
                linewidth=1.0,
                zorder=1,
            )
        )
    title = "normal cell" if cell == "normal" else "reduction cell"
    if genotype.search_space:
        title += f"  [{genotype.search_space}]"
    ax.set_title(title, fontsize=12)
    ax.set_xlim(-0.8, x_out + 0.8)
    ax.set_ylim(_Y_BOTTOM, _Y_TOP)
    ax.set_aspect("equal")
    ax.axis("off")


def _figure(genotype: Genotype, cell: str, dpi: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(genotype, Genotype):
        raise ValueError(f"expected a Genotype, got {type(genotype).__name__}")
    _check_cell_arg(cell, (*CELL_TYPES, "both"))
    cells = CELL_TYPES if cell == "both" else (cell,)
    fig = Figure(figsize=(10, 4.6 * len(cells)), dpi=dpi)
    FigureCanvasAgg(fig)  # Agg canvas for this figure only; pyplot's backend is untouched.
    axes = fig.subplots(len(cells), 1, squeeze=False)[:, 0]
    for ax, c in zip(axes, cells):
        _draw_cell(ax, genotype, c)
    fig.tight_layout()
    return fig


def plot(genotype: Genotype, path: PathLike, cell: str = "both", dpi: int = 100) -> PathLike:
    """Draw ``"normal"``, ``"reduce"`` or ``"both"`` cells to an image file.

    Uses matplotlib's Agg canvas directly (no pyplot, so an interactive backend
    chosen by the caller is left alone). The format follows the file suffix and
    defaults to PNG. Returns ``path``.

    Raises:
        ValueError: ``cell`` is not ``"normal"``, ``"reduce"`` or ``"both"``.
    """
    fig = _figure(genotype, cell, dpi)
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    fig.savefig(path, format=suffix or "png", facecolor="white")
    return path


def plot_to_array(genotype: Genotype, cell: str = "both", dpi: int = 100) -> np.ndarray:
    """Render the cell(s) to an RGBA ``uint8`` array of shape ``(H, W, 4)``."""
    import numpy as np

    fig = _figure(genotype, cell, dpi)
    fig.patch.set_facecolor("white")
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba(), dtype=np.uint8, copy=True)


def tensorboard_image(
    genotype: Genotype, step: int, name: str = "genotype", cell: str = "both"
) -> bool:
    """Write the rendered cell(s) with ``tf.summary.image`` to the default writer.

    Returns the value of ``tf.summary.image`` (``False`` when no default summary
    writer is set).
    """
    import tensorflow as tf

    image = plot_to_array(genotype, cell)[None]
    return bool(tf.summary.image(name, image, step=step, max_outputs=1, description=str(genotype)))
