"""Wall time of ``reference.forward`` on every documented example (the README sizes included).

    python benchmarks/reference_forward.py [--repeat N]

Prints the best of N runs per example; inputs and weights are drawn as the fixtures draw them.
A benchmark, not a test: numbers depend on the machine and its BLAS.
"""

from __future__ import annotations

import argparse
import time

import reference
from conformance.sampling.cases import draw_arrays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'layer':28s} {'example':26s} {'input shapes':22s} {'best ms':>9s}")
    for name in reference.names():
        for example in reference.spec(name).examples:
            inputs, weights = draw_arrays(name, example.config, example.input_shapes, seed=0)
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                reference.forward(name, *inputs, weights=weights, **example.config)
                best = min(best, time.perf_counter() - start)
            shapes = " ".join("x".join(map(str, s)) for s in example.input_shapes)
            print(f"{name:28s} {example.name:26s} {shapes:22s} {best * 1e3:9.2f}")


if __name__ == "__main__":
    main()
