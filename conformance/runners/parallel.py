"""``attnconf check --jobs N``: the layers of one check spread over N processes.

Each layer's checks (its examples, edge cases, rejections, gradients, training and its seeded
searches) are independent of every other layer's, so a layer is the unit of work: a process
loads the implementations once, checks the layers it is given with :func:`runner.check`, and
sends back its :class:`RunResult`. The results are merged in the order of ``layers``, so the
report is the one a single process writes (a test holds the two to the same JSON report).

Processes are started with ``spawn``, not ``fork``: TensorFlow, PyTorch and OpenMP thread pools
do not survive a fork, and a fresh interpreter is what every platform has.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from conformance.checks import expectations
from conformance.runners.runner import CheckSettings, RunResult

MAX_AUTO_JOBS = 4
"""``--jobs auto`` uses at most this many processes: each imports TensorFlow and PyTorch
(about 1 GB), and the per-layer work is too uneven for more to pay on a small check."""


def auto_jobs(layers: int) -> int:
    """One process per usable CPU, at most :data:`MAX_AUTO_JOBS` and at most one per layer."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_AUTO_JOBS, layers))


def _build_cost(layer: str) -> int:
    """A layer's weight count at its first documented example: the costliest part of a case is
    building the layer in a framework, which grows with its sublayers and variables. The
    costliest layers start first, so that no process is left with one long layer at the end."""
    import reference

    example = reference.spec(layer).examples[0]
    return len(reference.weight_shapes(layer, *example.input_shapes, **example.config))


_LOADED: dict[tuple[str, ...], list] = {}


class ProcessDied(RuntimeError):
    """A check process ended without a Python exception (a crash in native code, ``os._exit``,
    ``os.abort``), which takes every layer it had not finished with it: no verdict for those."""

    def __init__(self, unfinished: list[str]):
        self.unfinished = unfinished
        super().__init__(
            "a check process died abruptly (a crash in native code, os._exit or os.abort) with these layers "
            f"unfinished: {', '.join(unfinished)}; there is no verdict. An implementation that can end the "
            "process should declare `isolation` (docs/writing-an-adapter.md): its crash is then that case's error "
            "in the report. Or run --jobs 1 --layers <one of them> to find the layer."
        )


def _check_layer(specs: tuple[str, ...], layer: str, opts: CheckSettings) -> tuple[list[str], RunResult, list[int]]:
    """In a worker process: one layer on implementations loaded once per process."""
    from conformance.contract import load_implementation, portable_ref
    from conformance.checks.engine import Candidate
    from conformance.runners.runner import check

    if specs not in _LOADED:
        loaded = [(spec, load_implementation(spec)) for spec in specs]
        _LOADED[specs] = [Candidate(portable_ref(spec), impl) for spec, impl in loaded]  # after loading: portable_ref looks at the module
    candidates = _LOADED[specs]
    result = check(candidates, [layer], opts, progress=lambda message: print(message.replace("[", f"[{layer} ", 1), file=sys.stderr, flush=True))
    return [c.name for c in candidates], result, [d.matched for d in opts.expected]


def check_in_processes(specs: list[str], layers: list[str], opts: CheckSettings, jobs: int, progress: Callable[[str], None]) -> tuple[list[str], RunResult]:
    """:func:`runner.check` of ``layers`` on ``jobs`` processes; returns the implementations'
    names and the merged result. An implementation that fails to load raises here, as it would
    in one process."""
    started = time.perf_counter()
    merged = RunResult()
    names: list[str] = []
    matched = [0] * len(opts.expected)
    progress(f"checking {len(layers)} layers on {jobs} processes")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {layer: pool.submit(_check_layer, tuple(specs), layer, opts) for layer in sorted(layers, key=_build_cost, reverse=True)}
        for layer in layers:
            try:
                names, result, counts = futures[layer].result()
            except BrokenProcessPool:
                raise ProcessDied(sorted(name for name, f in futures.items() if not f.done() or f.exception() is not None)) from None
            merged.tallies.update(result.tallies)
            merged.failures.extend(result.failures)
            merged.more_failures.update(result.more_failures)
            merged.examples_run.update(result.examples_run)
            merged.fixed_cases_run.update(result.fixed_cases_run)
            matched = [a + b for a, b in zip(matched, counts)]
    for deviation, count in zip(opts.expected, matched):
        deviation.matched += count
    merged.stale = expectations.stale(opts.expected, layers, names)
    merged.seconds = time.perf_counter() - started
    return names, merged
