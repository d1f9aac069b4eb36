"""examples/finetune.py runs end to end (tiny): new head, fit, save, safe load, summary."""

import bnas_tf  # noqa: F401  (Keras 2 before TensorFlow)

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune.py"


def test_finetune_example_tiny(tiny_zoo_env, tiny_idx_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("finetune_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "finetune"
    results = example.main(
        [
            "--model=BNASB",
            "--weights=fashion_mnist",
            "--classes=0,2,4,6",
            "--train_examples=32",
            "--test_examples=16",
            "--freeze_epochs=1",
            "--epochs=1",
            "--batch_size=8",
            f"--data_dir={tiny_idx_dir}",
            f"--output_dir={out}",
        ]
    )
    assert results["task"] == ["T-shirt/top", "Pullover", "Coat", "Shirt"]
    # 64 tiny images, 4 classes
    assert results["train_examples"] == 26 and results["reload_identical"]
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "finetuned.keras").is_file() and (out / "history.csv").read_text().count(
        "\n"
    ) == 3
