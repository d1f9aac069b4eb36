"""docs/guides/python_api.md runs as written: its code blocks, in order, in one namespace."""

import bnas_tf  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)

import os
import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "python_api.md"


def test_the_python_guide_runs(tmp_path, fashion_dir, monkeypatch, capsys, restore_datasets):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(28, 28, 1) 10" in out
    assert Path("search/genotype.json").is_file() and Path("my_net.tflite").is_file()
    assert os.listdir("search/tensorboard")
    assert re.search(r"test top-1 0\.\d{3}", out)
    # 57 steps are too few for the BN moving statistics to settle: the tiny run's top-1 is
    # near chance, so only its range is checked here (the programs' tests check learning).
    assert 0.0 <= namespace["accuracy"] <= 1.0
    assert re.search(r"\d+ binary convolutions", out)
