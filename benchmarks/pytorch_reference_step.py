"""Time the PyTorch reference's search or training step (Kim et al., gistvision/bnas) on this CPU.

This script holds none of the reference's code: it imports ``model_search``,
``architect`` and ``bin_utils_search`` from a checkout of
https://github.com/gistvision/bnas (``--reference_src``, its ``src/`` folder) and runs
one step of its ``search.py`` training loop, the same calls in the same order:

    bin_op.binarization(); architect.step(...)             # alpha step (entropy term)
    optimizer.zero_grad(); loss(model(x)).backward()        # weight step
    bin_op.restore(); bin_op.updateBinaryGradWeight(); optimizer.step()

With ``--mode train`` it runs one step of ``train.py``'s loop instead, on
``model.NetworkCIFAR`` of ``genotypes.latest_cell_zeroise`` (BNAS-A; ``--arch``) with
``train.py``'s defaults (SGD, learning rate 0.1, momentum 0.9, weight decay 3e-6, 20 cells x
36 channels, drop-path probability 0 as in its first epoch):

```python
bin_op.binarization(); optimizer.zero_grad()
loss(model(x)).backward(); bin_op.restore(); bin_op.updateBinaryGradWeight(); optimizer.step()
```

``train.py``'s modules import ``torchvision.transforms`` for their data pipeline only;
where torchvision is not installed an empty stand-in module is used (no data is loaded).

Two adaptations let the 2020 code run on a current CPU-only PyTorch, neither changing
what is computed:

* ``.cuda()`` returns its tensor or module unchanged (the reference calls it on the
  alphas and the entropy terms);
* ``operations.BinActive`` is a legacy ``autograd.Function`` (instance ``forward`` /
  ``backward``), which PyTorch >= 1.5 refuses; it is replaced by a static-method
  Function with the same forward (``sign(x)``, ``mean|x|`` over channels) and the same
  backward (the gradient passed where ``-1 < x < 1``, zero elsewhere).

Run it with a Python that has torch (``pip install torch==2.13.0`` in a separate venv
on this machine kind):

```python
/tmp/torchvenv/bin/python benchmarks/pytorch_reference_step.py \\
    --reference_src ~/src/gistvision-bnas/src --steps 4
```

``benchmarks/search_speed.py --pytorch_python ... --reference_src ...`` runs it in the
same benchmark run as the bnas_tf configurations (side by side). Prints one line
``PYTORCH_REFERENCE_JSON: {...}``: median seconds per step, images/s, CPU seconds per
step, peak resident memory (``VmHWM``), the first step's time, the torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import types

from search_speed import _peak_rss_gb  # this folder; the standard library only

MARKER = "PYTORCH_REFERENCE_JSON:"


def _patch_for_cpu(torch) -> None:
    """``.cuda()`` becomes a no-op on tensors and modules (this run has no GPU)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self


def _new_style_bin_active(torch):
    """The reference's ``BinActive`` as a static-method Function (same values, same gradient)."""

    class _BinActiveFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sign(), x.abs().mean(1, keepdim=True)

        @staticmethod
        def backward(ctx, grad_output, grad_mean):
            (x,) = ctx.saved_tensors
            grad = grad_output.clone()
            grad[x.ge(1)] = 0
            grad[x.le(-1)] = 0
            return grad

    class BinActive:
        def __call__(self, x):
            return _BinActiveFunction.apply(x)

    return BinActive


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference_src", required=True, help="gistvision/bnas src/ folder")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after the first")
    parser.add_argument("--mode", choices=("search", "train"), default="search")
    parser.add_argument("--arch", default="latest_cell_zeroise", help="train: genotypes.ARCH")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=None, help="default 8 (search), 20 (train)")
    parser.add_argument("--init_channels", type=int, default=None, help="16 / 36")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)"
    )
    args = parser.parse_args(argv)
    train = args.mode == "train"
    args.layers = args.layers or (20 if train else 8)
    args.init_channels = args.init_channels or (36 if train else 16)
    src = os.path.abspath(os.path.expanduser(args.reference_src))
    needed = ("model.py", "bin_utils.py", "genotypes.py") if train else ("model_search.py",)
    missing = [
        m
        for m in (*needed, "architect.py", "bin_utils_search.py", "operations.py")
        if not os.path.exists(os.path.join(src, m))
    ]
    if missing:
        raise SystemExit(
            f"--reference_src={src} is not gistvision/bnas's src/ folder: missing "
            f"{', '.join(missing)}."
        )

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _patch_for_cpu(torch)
    sys.path.insert(0, src)
    import operations  # noqa: E402  (the reference's modules)

    operations.BinActive = _new_style_bin_active(torch)
    if train:
        return _time(args, torch, *_train_step(args, torch, operations))
    import architect as architect_lib  # noqa: E402
    import bin_utils_search  # noqa: E402
    import model_search  # noqa: E402

    model_search.BinActive = operations.BinActive  # `from operations import *` copied the name
    torch.manual_seed(2)
    np.random.seed(2)
    # search.py's defaults (argparse there): momentum 0.9, wd 3e-4, arch lr 3e-4, lambda 1, tau 7.7.
    ref_args = types.SimpleNamespace(
        momentum=0.9,
        weight_decay=3e-4,
        arch_learning_rate=3e-4,
        arch_weight_decay=1e-3,
        lamda=1.0,
        tau=7.7,
        num_skip=1,
        learning_rate=0.025,
    )
    criterion = torch.nn.CrossEntropyLoss()
    model = model_search.Network(args.init_channels, 10, args.layers, criterion)
    optimizer = torch.optim.SGD(
        model.parameters(),
        ref_args.learning_rate,
        momentum=ref_args.momentum,
        weight_decay=ref_args.weight_decay,
    )
    architect = architect_lib.Architect(model, ref_args)
    bin_op = bin_utils_search.BinOp(model, ref_args)
    model.train()
    g = torch.Generator().manual_seed(0)
    n, s = args.batch_size, args.image_size
    x_train, x_val = torch.rand(n, 3, s, s, generator=g), torch.rand(n, 3, s, s, generator=g)
    y_train = torch.randint(0, 10, (n,), generator=g)
    y_val = torch.randint(0, 10, (n,), generator=g)

    def step():
        bin_op.binarization()
        architect.step(x_train, y_train, x_val, y_val, ref_args.learning_rate, optimizer, 0)
        optimizer.zero_grad()
        loss = criterion(model(x_train), y_train)
        loss.backward()
        bin_op.restore()
        bin_op.updateBinaryGradWeight()
        optimizer.step()
        return float(loss.item())

    return _time(
        args, torch, step, "PyTorch gistvision/bnas search step (search.py loop body), CPU"
    )


def _train_step(args, torch, operations):
    """``(step, what)``: one step of the reference's ``train.py`` loop on random images."""
    if "torchvision" not in sys.modules:  # utils.py imports it for its data transforms only
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.transforms"] = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    import bin_utils  # noqa: E402  (the reference's modules)
    import genotypes  # noqa: E402
    import model as model_lib  # noqa: E402

    model_lib.BinActive = operations.BinActive  # `from operations import *` copied the name
    torch.manual_seed(2)
    criterion = torch.nn.CrossEntropyLoss()
    model = model_lib.NetworkCIFAR(
        args.init_channels, 10, args.layers, getattr(genotypes, args.arch)
    )
    model.drop_path_prob = 0.0  # train.py's first epoch: 0.2 * epoch / epochs
    # train.py's defaults (argparse there): lr 0.1, momentum 0.9, weight decay 3e-6, num_skip 1.
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=3e-6)
    bin_op = bin_utils.BinOp(model, types.SimpleNamespace(num_skip=1))
    model.train()
    g = torch.Generator().manual_seed(0)
    n, s = args.batch_size, args.image_size
    x, y = torch.rand(n, 3, s, s, generator=g), torch.randint(0, 10, (n,), generator=g)

    def step():
        bin_op.binarization()
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        bin_op.restore()
        bin_op.updateBinaryGradWeight()
        optimizer.step()
        return float(loss.item())

    return step, f"PyTorch gistvision/bnas training step (train.py loop body, {args.arch}), CPU"


def _time(args, torch, step, what: str) -> dict:
    """Run ``step`` once (the first step), then ``args.steps`` timed steps; print the JSON line."""
    n, s = args.batch_size, args.image_size
    t = time.perf_counter()
    first_loss = step()
    first_s = time.perf_counter() - t
    times, cpu = [], []
    for _ in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        last_loss = step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    median = statistics.median(times)
    result = {
        "what": what,
        "mode": args.mode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "batch_size": n,
        "layers": args.layers,
        "init_channels": args.init_channels,
        "image_size": s,
        "first_step_s": first_s,
        "step_s": times,
        "median_step_s": median,
        "images_per_s": n / median,
        "median_cpu_s_per_step": statistics.median(cpu),
        "peak_rss_gb": _peak_rss_gb(),
        "first_loss": first_loss,
        "last_loss": last_loss,
    }
    print(MARKER + " " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
