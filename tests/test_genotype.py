import bnas_tf  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from bnas_tf import genotype as G
from bnas_tf.genotype import Genotype

import collections
import dataclasses
import json
import os
import struct

import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# quark0/darts cnn/genotypes.py, DARTS_V2.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)


def _dict(**changes):
    d = G.BNAS_A.to_dict()
    d.update(changes)
    return d


def _edges(cell="normal", index=0, edge=None):
    d = G.BNAS_XNOR_1.to_dict()
    d[cell][index] = list(edge)
    return d


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC
    return struct.unpack(">II", head[16:24])  # IHDR width, height


# --------------------------------------------------------------- published


@pytest.mark.parametrize("name", sorted(G.PUBLISHED))
def test_published_json_round_trip(name):
    g = G.PUBLISHED[name]
    assert g.validate() is g
    assert g.validate(g.search_space) is g
    text = g.to_json()
    assert json.loads(text) == g.to_dict()
    back = Genotype.from_json(text)
    assert back == g and hash(back) == hash(g)
    assert Genotype.from_json(g.to_json(indent=None)) == g
    assert Genotype.from_dict(g.to_dict()) == g
    assert G.get(name) is g and G.get(name.upper().replace("_", "-")) is g
    assert G.get(text) == g


def test_published_constants():
    assert G.PUBLISHED == {
        "bnas_a": G.BNAS_A,
        "latest_cell": G.LATEST_CELL,
        "bnas_xnor_1": G.BNAS_XNOR_1,
    }
    assert G.BNAS_A.search_space == G.LATEST_CELL.search_space == "bnas_kim"
    assert G.BNAS_XNOR_1.search_space == "bnas_darts"
    assert G.BNAS_A.normal[:3] == (("none", 1), ("bin_dil_conv_3x3", 0), ("bin_conv_3x3", 1))
    assert G.LATEST_CELL.reduce[-1] == ("bin_dil_conv_3x3", 4)
    assert G.BNAS_XNOR_1.reduce[0] == ("bin_sep_conv_3x3", 1)
    for g in G.PUBLISHED.values():
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "g.json"
    assert G.LATEST_CELL.save(path) == path
    assert Genotype.load(path) == G.LATEST_CELL
    assert Genotype.load(str(path)) == G.LATEST_CELL
    assert G.get(str(path)) == G.LATEST_CELL
    assert G.get(path) == G.LATEST_CELL
    G.BNAS_A.save(str(path))  # overwrite in place
    assert Genotype.load(path) == G.BNAS_A
    assert sorted(os.listdir(tmp_path)) == ["g.json"]  # no temp files left behind


def test_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Genotype.load(missing)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        G.get(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [')
    with pytest.raises(ValueError, match=r"bad\.json.*malformed"):
        Genotype.load(bad)


def test_get_unknown_name_lists_published():
    with pytest.raises(ValueError, match="bnas_a, latest_cell, bnas_xnor_1"):
        G.get("no_such_cell")


# ---------------------------------------------------------- dict / JSON errors


def test_from_json_malformed():
    with pytest.raises(ValueError, match=r"malformed genotype JSON: .* line 1 column \d+"):
        Genotype.from_json("{normal: 1}")


def test_from_json_truncated():
    text = G.BNAS_A.to_json()
    with pytest.raises(ValueError, match=r"malformed genotype JSON.*\(char \d+\)"):
        Genotype.from_json(text[: len(text) // 2])


def test_from_json_not_an_object():
    with pytest.raises(ValueError, match="JSON object"):
        Genotype.from_json("[1, 2]")


def test_from_dict_missing_key():
    d = _dict()
    del d["reduce"]
    with pytest.raises(ValueError, match="missing key.*'reduce'"):
        Genotype.from_dict(d)


def test_from_dict_unknown_key():
    with pytest.raises(ValueError, match="unknown key.*'reduction'"):
        Genotype.from_dict(_dict(reduction=[]))


def test_from_dict_search_space_optional():
    d = _dict()
    del d["search_space"]
    assert Genotype.from_dict(d).search_space is None


# ------------------------------------------------------------- validation


def test_unknown_op():
    with pytest.raises(ValueError, match=r"normal cell, edge 3 \(node 3\): unknown op 'conv_9x9'"):
        Genotype.from_dict(_edges("normal", 3, ("conv_9x9", 1)))


def test_op_not_in_named_space():
    d = G.BNAS_A.to_dict()
    d["reduce"][1] = ["skip_connect", 1]
    with pytest.raises(
        ValueError,
        match=r"reduce cell, edge 1 \(node 2\): op 'skip_connect' is not in search space "
        r"'bnas_kim'",
    ):
        Genotype.from_dict(d)
    # The same genotype without a space is fine, but fails when validated against one.
    d["search_space"] = None
    g = Genotype.from_dict(d)
    with pytest.raises(ValueError, match="not in search space 'bnas_kim'"):
        g.validate("bnas_kim")
    assert g.validate() is g


def test_unknown_search_space():
    with pytest.raises(ValueError, match="unknown search space 'nope'.*bnas_darts, bnas_kim"):
        Genotype.from_dict(_dict(search_space="nope"))


def test_input_index_out_of_range():
    with pytest.raises(
        ValueError, match=r"reduce cell, edge 5 \(node 4\): input 6 out of range 0\.\.3"
    ):
        Genotype.from_dict(_edges("reduce", 5, ("max_pool_3x3", 6)))
    with pytest.raises(
        ValueError, match=r"normal cell, edge 0 \(node 2\): input 2 out of range 0\.\.1"
    ):
        Genotype.from_dict(_edges("normal", 0, ("max_pool_3x3", 2)))
    with pytest.raises(ValueError, match=r"input -1 out of range"):
        Genotype.from_dict(_edges("normal", 7, ("max_pool_3x3", -1)))


def test_bad_edge_shapes():
    with pytest.raises(ValueError, match=r"edge 2 \(node 3\): input must be an int, got '1'"):
        Genotype.from_dict(_edges("normal", 2, ("max_pool_3x3", "1")))
    with pytest.raises(ValueError, match=r"input must be an int, got True"):
        Genotype.from_dict(_edges("normal", 2, ("max_pool_3x3", True)))
    with pytest.raises(ValueError, match=r"edge 4 \(node 4\): expected an \(op, input\) pair"):
        Genotype.from_dict(_edges("reduce", 4, ("max_pool_3x3", 1, 2)))
    with pytest.raises(ValueError, match=r"op name must be a string, got 3"):
        Genotype.from_dict(_edges("reduce", 4, (3, 1)))


def test_wrong_edge_count():
    d = _dict()
    d["normal"] = d["normal"][:7]
    with pytest.raises(ValueError, match="normal cell: expected 8 edges .* got 7"):
        Genotype.from_dict(d)
    d = _dict()
    d["reduce"] = d["reduce"] + [["none", 0]]
    with pytest.raises(ValueError, match="reduce cell: expected 8 edges .* got 9"):
        Genotype.from_dict(d)


@pytest.mark.parametrize(
    "concat, message",
    [
        ([], "must not be empty"),
        ([2, 6], r"node 6 out of range 2\.\.5"),
        ([1, 2], r"node 1 out of range 2\.\.5"),
        ([2, 3, 3], "duplicate node 3"),
        (["2"], "node index must be an int"),
    ],
)
def test_bad_concat(concat, message):
    with pytest.raises(ValueError, match="reduce cell concat: " + message):
        Genotype.from_dict(_dict(reduce_concat=concat))


def test_validation_error_from_constructor():
    with pytest.raises(ValueError, match="normal cell: expected 8 edges"):
        Genotype(normal=[("none", 0)], normal_concat=[2], reduce=G.BNAS_A.reduce, reduce_concat=[2])


# ------------------------------------------------------------------- DARTS


def test_old_darts_space_genotype_names_the_dense_dilated_conv():
    """A bnas_darts genotype saved before DARTS' dil_conv became separable gets an error
    that says so and how to rebuild it as trained."""
    old = G.BNAS_XNOR_1.to_dict()
    old["normal"] = [[op.replace("dil_sep_conv", "dil_conv"), j] for op, j in old["normal"]]
    with pytest.raises(
        ValueError, match="dilated separable bin_dil_sep_conv_3x3.*search_space=None"
    ):
        Genotype.from_dict(old)
    rebuilt = Genotype.from_dict({**old, "search_space": None})
    assert rebuilt.normal[1] == ("bin_dil_conv_3x3", 0)


def test_from_darts_string_with_rename():
    g = Genotype.from_darts_string(DARTS_V2, search_space="bnas_darts", rename=G.DARTS_RENAME)
    assert g.search_space == "bnas_darts"
    assert g.normal[0] == ("bin_sep_conv_3x3", 0)
    assert g.normal[7] == ("bin_dil_sep_conv_3x3", 2)  # DARTS' DilConv is separable
    assert g.reduce[2] == ("skip_connect", 2)
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert g.ops("normal") == collections.Counter(
        {"bin_sep_conv_3x3": 5, "skip_connect": 2, "bin_dil_sep_conv_3x3": 1}
    )
    # str() is a DARTS-style repr that parses back to the same genotype.
    assert str(g).startswith("Genotype(normal=[('bin_sep_conv_3x3', 0), ")
    assert "normal_concat=range(2, 6)" in str(g)
    assert Genotype.from_darts_string(str(g)) == g


def test_from_darts_string_without_rename_rejects_darts_ops():
    with pytest.raises(ValueError, match="unknown op 'sep_conv_3x3'"):
        Genotype.from_darts_string(DARTS_V2)


def test_from_darts_string_range_assignment_and_nested():
    # gistvision/bnas style: `name = Genotype(...)` with range() concats.
    text = "latest_cell_zeroise = " + str(G.BNAS_A).replace(", search_space='bnas_kim'", "")
    assert "range(2, 6)" in text
    g = Genotype.from_darts_string(text, search_space="bnas_kim")
    assert g == G.BNAS_A
    # pt.darts style: one list of two edges per node.
    nested = [list(G.BNAS_XNOR_1.normal[i : i + 2]) for i in range(0, 8, 2)]
    nested_r = [list(G.BNAS_XNOR_1.reduce[i : i + 2]) for i in range(0, 8, 2)]
    text = (
        f"Genotype(normal={nested!r}, normal_concat=range(2, 6), reduce={nested_r!r}, "
        f"reduce_concat=range(2, 6))"
    )
    assert Genotype.from_darts_string(text, search_space="bnas_darts") == G.BNAS_XNOR_1


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=__import__('os')"),
        DARTS_V2.replace("[2, 3, 4, 5])", "list(range(2, 6)))"),
        DARTS_V2.replace("Genotype(", "Evil("),
        "Genotype(normal=[",
        "x = 1; " + DARTS_V2,
    ],
)
def test_from_darts_string_rejects_code(text, monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(ValueError):
        Genotype.from_darts_string(text, rename=G.DARTS_RENAME)
    assert not called


# ------------------------------------------------------- ops, hash, equality


def test_ops_counts():
    assert G.BNAS_A.ops("normal") == collections.Counter(
        {"none": 6, "bin_dil_conv_3x3": 1, "bin_conv_3x3": 1}
    )
    assert G.BNAS_A.ops("reduce") == collections.Counter({"none": 6, "max_pool_3x3": 2})
    assert G.BNAS_A.ops() == G.BNAS_A.ops("normal") + G.BNAS_A.ops("reduce")
    assert G.LATEST_CELL.ops("reduce")["max_pool_3x3"] == 5
    assert sum(G.BNAS_XNOR_1.ops("both").values()) == 16
    with pytest.raises(ValueError, match="cell must be one of"):
        G.BNAS_A.ops("reduction")


def test_hash_and_equality():
    a = Genotype.from_dict(G.LATEST_CELL.to_dict())
    assert a == G.LATEST_CELL and a is not G.LATEST_CELL
    assert len({a, G.LATEST_CELL, G.BNAS_A, G.BNAS_XNOR_1}) == 3
    assert a != G.BNAS_A
    d = G.LATEST_CELL.to_dict()
    d["search_space"] = None
    assert Genotype.from_dict(d) != G.LATEST_CELL  # the space is part of the identity
    assert isinstance(a.normal, tuple) and isinstance(a.normal[0], tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.normal = ()  # frozen


# ---------------------------------------------------------------- plotting


@pytest.mark.parametrize("name", sorted(G.PUBLISHED))
@pytest.mark.parametrize("cell", ["normal", "reduce", "both"])
def test_plot_png(tmp_path, name, cell):
    path = tmp_path / f"{name}_{cell}.png"
    assert G.plot(G.PUBLISHED[name], path, cell=cell, dpi=40) == path
    width, height = _png_size(path)
    assert width >= 300 and height >= 150
    assert path.stat().st_size > 2000


def test_plot_both_is_taller_and_default_png(tmp_path):
    single = _png_size(G.plot(G.BNAS_A, tmp_path / "n.png", cell="normal", dpi=40))
    path = G.plot(G.BNAS_A, str(tmp_path / "noext"), dpi=40)  # no suffix -> PNG
    both = _png_size(path)
    assert both[0] == single[0] and both[1] > 1.5 * single[1]


def test_plot_bad_cell(tmp_path):
    with pytest.raises(ValueError, match="cell must be one of"):
        G.plot(G.BNAS_A, tmp_path / "x.png", cell="reduction")
    with pytest.raises(ValueError, match="cell must be one of"):
        G.plot_to_array(G.BNAS_A, cell="all")


def test_plot_to_array():
    arr = G.plot_to_array(G.BNAS_XNOR_1, "normal", dpi=40)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 4
    assert arr.shape[0] >= 100 and arr.shape[1] >= 300
    assert arr[..., :3].min() < 128 < arr[..., :3].max()  # something was drawn
    both = G.plot_to_array(G.BNAS_XNOR_1, "both", dpi=40)
    assert both.shape[1] == arr.shape[1] and both.shape[0] > arr.shape[0]


def test_tensorboard_image(tmp_path):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert G.tensorboard_image(G.BNAS_A, step=3, name="cells", cell="normal")
    writer.close()
    (event_file,) = [p for p in tmp_path.iterdir() if "tfevents" in p.name]
    tags = [
        (v.tag, e.step)
        for e in tf.compat.v1.train.summary_iterator(str(event_file))
        for v in e.summary.value
    ]
    assert ("cells", 3) in tags
    assert not G.tensorboard_image(G.BNAS_A, step=0)  # no default writer
