"""Where a tiny search spends the time outside its training steps: a sampling profile.

Runs one search of ``search_speed.py``'s tiny configuration in this process while a
thread records the main thread's Python stack every ``--interval`` seconds, a
callback records every batch, and ``gc.callbacks`` every garbage collection. For each
``fit`` call (a reduction stage, or one epoch of the plain search) it reports:

```python
outside = fit wall - sum(batch walls)         # start-up and tear-down
after_train_end = fit return - on_train_end   # releasing fit's locals
```

and the most frequent stacks sampled outside the batches, between the fits and after
the last one. It was written to find the 30-70 s stalls that some runs of
``search_speed.py --part reduction`` show (see its results' notes). With
``--gdb-after S`` a stack that stands still S seconds outside the batches is also dumped
natively, every thread (``gdb``), next to ``--output``: the Python stack alone ends where
TensorFlow's C++ begins.

Usage:

```python
.venv/bin/python benchmarks/stall_profile.py --kind reduction --limit 6400 \\
    --output /tmp/stall_reduction.json --gdb-after 4
```
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_speed import _tiny_search  # noqa: E402


class StallWatch:
    """Says when the main thread's stack has stood still ``after`` seconds outside a batch.

    Feed it every sample; it answers True once per ``after`` seconds of one unchanged stack
    (``after <= 0``: never). A batch is never a stall: a first step traces for many seconds.
    """

    def __init__(self, after: float):
        self.after, self.since, self.last = after, None, None

    def observe(self, now: float, stack: list, in_batch: bool) -> bool:
        if self.after <= 0:
            return False
        if in_batch or stack != self.last or self.since is None:
            self.since, self.last = now, stack
            return False
        if now - self.since >= self.after:
            self.since = now
            return True
        return False

    def restart(self, now: float) -> None:
        """Count the next ``after`` seconds from ``now`` (after a slow dump)."""
        self.since = now


class _Sampler(threading.Thread):
    """The main thread's stack (innermost first, ``file:function:line``) every ``interval`` s.

    With ``gdb_after`` seconds set, a stack unchanged for that long while ``in_batch()`` is
    false (a stall outside the training steps) is dumped once more natively, every thread,
    with ``gdb -p <pid> -batch -ex "thread apply all bt"``, into ``gdb_dir``.
    """

    def __init__(
        self,
        interval: float,
        gdb_after: float = 0.0,
        gdb_dir: Path | None = None,
        in_batch=lambda: False,
    ):
        super().__init__(daemon=True)
        self.interval, self.samples, self.stopped = interval, [], False
        self.main = threading.main_thread().ident
        self.watch, self.gdb_dir, self.in_batch = StallWatch(gdb_after), gdb_dir, in_batch
        self.dumps: list[dict] = []

    def _dump(self, stack: list) -> None:
        path = self.gdb_dir / f"gdb_{len(self.dumps)}.txt"
        started = time.perf_counter()
        result = subprocess.run(
            ["gdb", "-p", str(os.getpid()), "-batch", "-ex", "thread apply all bt"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        path.write_text(result.stdout + result.stderr)
        self.dumps.append(
            {
                "t": started,
                "python_stack": stack[:8],
                "path": str(path),
                "gdb_s": time.perf_counter() - started,
            }
        )

    def run(self):
        while not self.stopped:
            frame = sys._current_frames().get(self.main)
            if frame is not None:
                stack = [
                    f"{f.f_code.co_filename.split('site-packages/')[-1]}:{f.f_code.co_name}:{line}"
                    for f, line in traceback.walk_stack(frame)
                ]
                now = time.perf_counter()
                self.samples.append((now, stack))
                if self.watch.observe(now, stack, self.in_batch()):
                    self._dump(stack)
                    self.watch.restart(time.perf_counter())
            time.sleep(self.interval)


def summarize(events: list, samples: list, collections_: list, depth: int = 4) -> dict:
    """Per-fit times and the top stacks outside batches from the recorded events."""
    fits, current = [], None
    for name, t in events:
        if name == "fit_call":
            current = {"start": t, "batches": [], "train_end": None}
        elif name == "fit_return":
            current["end"] = t
            fits.append(current)
        elif name == "batch_begin":
            current["batches"].append([t, None])
        elif name == "batch_end":
            current["batches"][-1][1] = t
        elif name == "train_end":
            current["train_end"] = t

    def where(t):
        for k, fit in enumerate(fits):
            if fit["start"] <= t <= fit["end"]:
                inside = any(e is not None and b <= t <= e for b, e in fit["batches"])
                return f"fit {k} " + ("batch" if inside else "outside batches")
        return "between fits"

    rows = []
    for fit in fits:
        walls = [e - b for b, e in fit["batches"] if e is not None]
        rows.append(
            {
                "wall_s": fit["end"] - fit["start"],
                "batches": len(walls),
                "first_batch_s": walls[0] if walls else None,
                "median_batch_s": statistics.median(walls[1:]) if len(walls) > 1 else None,
                "outside_batches_s": fit["end"] - fit["start"] - sum(walls),
                "after_train_end_s": fit["end"] - fit["train_end"] if fit["train_end"] else None,
            }
        )
    stacks = collections.defaultdict(collections.Counter)
    for t, stack in samples:
        place = where(t)
        if not place.endswith(" batch"):
            stacks[place][" < ".join(stack[:depth])] += 1
    return {
        "fits": rows,
        "gaps_between_fits_s": [b["start"] - a["end"] for a, b in zip(fits, fits[1:])],
        "longest_gc_s": max((c[1] for c in collections_), default=0.0),
        "gc_collections": len(collections_),
        "top_stacks_outside_batches": {
            place: counter.most_common(5) for place, counter in sorted(stacks.items())
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("plain", "reduction"), default="reduction")
    parser.add_argument("--limit", type=int, default=6400, help="images of Fashion-MNIST")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between stack samples")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--gdb-after",
        type=float,
        default=0.0,
        help="seconds of one unchanged stack outside a batch before a native gdb dump (0: off)",
    )
    args = parser.parse_args(argv)

    import bnas_tf  # noqa: F401  (before tensorflow)
    from bnas_tf.search.driver import SearchConfig, run_search
    from bnas_tf.search.reduction_search import run_reduction_search

    import tensorflow as tf

    events, collected, gc_start = [], [], {}

    def on_gc(phase, info):
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        else:
            collected.append((info["generation"], time.perf_counter() - gc_start.get("t", 0.0)))

    class Recorder(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(("batch_begin", time.perf_counter()))

        def on_train_batch_end(self, batch, logs=None):
            events.append(("batch_end", time.perf_counter()))

        def on_train_end(self, logs=None):
            events.append(("train_end", time.perf_counter()))

    plain_fit = tf.keras.Model.fit

    def recorded_fit(self, *a, **kw):
        events.append(("fit_call", time.perf_counter()))
        kw["callbacks"] = [*(kw.get("callbacks") or []), Recorder()]
        try:
            return plain_fit(self, *a, **kw)
        finally:
            events.append(("fit_return", time.perf_counter()))

    tf.keras.Model.fit = recorded_fit
    gc.callbacks.append(on_gc)

    def in_batch() -> bool:
        return bool(events) and events[-1][0] == "batch_begin"

    args.output.parent.mkdir(parents=True, exist_ok=True)  # the gdb dumps go there too
    sampler = _Sampler(args.interval, args.gdb_after, args.output.parent, in_batch)
    sampler.start()
    config = SearchConfig.from_flat(
        {
            "epochs": args.epochs,
            **_tiny_search(args.limit),
            **({} if args.kind == "plain" else {"method": "reduction"}),
        }
    )
    out = tempfile.mkdtemp(prefix=f"stall_profile_{args.kind}_")
    started = time.perf_counter()
    if args.kind == "plain":
        run_search(config, out)
    else:
        run_reduction_search(config, out, log=lambda _: None)
    wall = time.perf_counter() - started
    sampler.stopped = True
    gc.callbacks.remove(on_gc)
    payload = {"kind": args.kind, "search": _tiny_search(args.limit), "wall_s": wall}
    payload.update(summarize(events, sampler.samples, collected))
    payload["after_last_fit_s"] = started + wall - events[-1][1]
    payload["gdb_dumps"] = [{**d, "t": d["t"] - started} for d in sampler.dumps]
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    for k, row in enumerate(payload["fits"]):
        print(
            f"fit {k}: {row['wall_s']:.1f} s, outside batches {row['outside_batches_s']:.1f} s, "
            f"after on_train_end {row['after_train_end_s']:.1f} s"
        )
    print(f"wall {wall:.1f} s; longest garbage collection {payload['longest_gc_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
