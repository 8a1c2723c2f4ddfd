"""Measurements behind ``benchmarks/frameworks.py`` (imported only after the thread count is set)."""

from __future__ import annotations

import gc
import math
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import reference
from conformance.checks.engine import to_layout
from conformance.sampling.cases import draw_arrays

MiB = 2.0**20


@dataclass
class Row:
    layer: str
    size: str
    shapes: tuple
    times: dict[str, float] = field(default_factory=dict)  # seconds, best of N
    memory: dict[str, float] = field(default_factory=dict)  # bytes

    def ratio(self, other: str) -> float:
        return self.times["ref"] / self.times[other] if other in self.times else math.nan


def readme_example(name: str):
    return next(e for e in reference.spec(name).examples if e.documented_output_shape is not None)


def cases(args, large):
    for name in reference.names():
        if args.layer and name not in args.layer:
            continue
        example = readme_example(name)
        sizes = {"readme": (dict(example.config), tuple(example.input_shapes)), "large": large[name]}
        for size, (config, shapes) in sizes.items():
            if args.size and size not in args.size:
                continue
            yield name, size, config, tuple(tuple(s) for s in shapes)


# --------------------------------------------------------------------------------------------
# The callables under test: each takes no argument and runs one forward


def reference_call(name, config, inputs, weights) -> Callable[[], object]:
    return lambda: reference.forward(name, *inputs, weights=weights, **config)


def torch_call(name, config, shapes, inputs, weights, dtype: str):
    import torch

    from impls.torch.adapter import implementation

    layer = implementation.build(name, config, shapes, dtype)
    np_dtype = np.dtype(dtype)
    layer.load_weights({k: v.astype(np_dtype) for k, v in weights.items()})
    kinds = [i.kind for i in reference.spec(name).inputs]
    tensors = [torch.from_numpy(np.ascontiguousarray(to_layout(x, kind, "channels_first").astype(np_dtype))) for x, kind in zip(inputs, kinds)]
    module = layer.module

    def call():
        with torch.inference_mode():
            return module(*tensors)

    return call


def keras_call(name, config, shapes, inputs, weights, dtype: str):
    import keras

    from impls.tf.adapter import implementation

    layer = implementation.build(name, config, shapes, dtype)
    np_dtype = np.dtype(dtype)
    layer.load_weights({k: v.astype(np_dtype) for k, v in weights.items()})
    tensors = [keras.ops.convert_to_tensor(x.astype(np_dtype)) for x in inputs]
    model = layer.model
    argument = tensors if len(tensors) > 1 else tensors[0]
    return lambda: model(argument, training=False)


def best_times(calls: dict[str, Callable], repeat: int, budget: float = 0.25) -> dict[str, float]:
    """Best of ``repeat`` per callable after one warm-up call each; the callables take turns.
    Fast calls get more turns, up to ``budget`` seconds for the slowest of them (best of 200 at
    most), since on a loaded machine the best of a few short calls is mostly noise."""
    slowest = 0.0
    for call in calls.values():
        start = time.perf_counter()
        call()
        slowest = max(slowest, time.perf_counter() - start)
    turns = max(repeat, min(200, int(budget / max(slowest, 1e-6))))
    best = {key: math.inf for key in calls}
    gc.collect()
    gc.disable()  # as timeit does: no collection pauses inside a timed call
    try:
        for _ in range(turns):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                best[key] = min(best[key], time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def reference_peak(call) -> float:
    """Peak bytes NumPy allocates during the call, above what was held before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        out = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del out
    return float(peak - before)


def torch_peak(call) -> float:
    """Peak of the running sum of PyTorch's CPU allocations and frees during the call."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = call()
    del out
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return float(peak)


# --------------------------------------------------------------------------------------------


def measure(name, size, config, shapes, args) -> Row:
    inputs, weights = draw_arrays(name, config, shapes, seed=0)
    calls = {"ref": reference_call(name, config, inputs, weights)}
    for dtype in ("float64", "float32"):
        calls[f"torch{dtype[-2:]}"] = torch_call(name, config, shapes, inputs, weights, dtype)
    if not args.no_keras:
        for dtype in ("float64", "float32"):
            calls[f"keras{dtype[-2:]}"] = keras_call(name, config, shapes, inputs, weights, dtype)
    row = Row(name, size, shapes, times=best_times(calls, args.repeat, getattr(args, "budget", 0.25)))
    if not args.no_memory:
        row.memory["ref"] = reference_peak(calls["ref"])
        row.memory["torch64"] = torch_peak(calls["torch64"])
    return row


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}" if seconds < 10 else f"{seconds * 1e3:8.0f}"


def _mib(nbytes: float) -> str:
    return f"{nbytes / MiB:7.1f}"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {torch.__version__}"
    )


def run(args, large) -> int:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    keras_version = ""
    if not args.no_keras:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notes from Keras' convolutions
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        import keras

        keras_version = f", TensorFlow {tf.__version__}, Keras {keras.__version__}"
    print(f"# {machine()}{keras_version}")
    malloc = "glibc keeps freed memory" if getattr(args, "malloc_tuned", False) else "glibc allocator defaults"
    print(f"# {args.threads} thread(s) per library, best of {args.repeat} or more; {malloc}; times in ms; peak memory in MiB")
    columns = ["ref", "torch64", "torch32"] + ([] if args.no_keras else ["keras64", "keras32"])
    header = f"{'layer':27s} {'size':6s} {'input shapes':24s} " + " ".join(f"{c:>8s}" for c in columns)
    header += f" {'r/t64':>6s} {'r/t32':>6s}" + ("" if args.no_keras else f" {'r/k64':>6s}")
    if not args.no_memory:
        header += f" {'ref MiB':>7s} {'t64 MiB':>7s} {'r/t64':>6s}"
    print(header)
    rows = []
    for name, size, config, shapes in cases(args, large):
        row = measure(name, size, config, shapes, args)
        rows.append(row)
        text = f"{name:27s} {size:6s} {' '.join('x'.join(map(str, s)) for s in shapes):24s} "
        text += " ".join(_ms(row.times[c]) for c in columns)
        text += f" {row.ratio('torch64'):6.2f} {row.ratio('torch32'):6.2f}" + ("" if args.no_keras else f" {row.ratio('keras64'):6.2f}")
        if row.memory:
            text += f" {_mib(row.memory['ref'])} {_mib(row.memory['torch64'])} {row.memory['ref'] / max(row.memory['torch64'], 1):6.2f}"
        print(text, flush=True)
    summarise(rows, args)
    return 0


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def summarise(rows, args) -> None:
    print()
    for label, key in (("PyTorch float64", "torch64"), ("PyTorch float32", "torch32")) + (() if args.no_keras else (("Keras float64", "keras64"),)):
        ratios = [(row.ratio(key), row) for row in rows]
        worst, worst_row = max(ratios, key=lambda item: item[0])
        print(
            f"reference / {label:16s} geometric mean {geometric_mean(r for r, _ in ratios):5.2f}, "
            f"worst {worst:5.2f} ({worst_row.layer} {worst_row.size})"
        )
    large = [row for row in rows if row.size == "large" and row.memory]
    if large:
        ratios = [(row.memory["ref"] / max(row.memory["torch64"], 1), row) for row in large]
        worst, worst_row = max(ratios, key=lambda item: item[0])
        print(f"reference / PyTorch float64 peak memory at the larger sizes: worst {worst:5.2f} ({worst_row.layer})")
