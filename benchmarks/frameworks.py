"""The float64 reference side by side with the bundled PyTorch and Keras implementations.

    python benchmarks/frameworks.py [--threads N] [--repeat N] [--layer NAME ...] [--no-keras] [--no-memory]

For every layer, at its README size (the first documented example with a documented output
shape) and at one larger size (``LARGE`` below), prints the best-of-N forward time of

- ``ref``: ``reference.forward`` in float64 (validation included);
- ``torch64`` / ``torch32``: the ``impls.torch`` module in float64 / float32, called on tensors
  already in its layout (channels-first maps), under ``torch.inference_mode``;
- ``keras64`` / ``keras32``: the ``impls.tf`` model built by the Keras adapter, called eagerly
  on tensors (``model(x, training=False)``);

and the ratios ``ref / torch64``, ``ref / torch32``, ``ref / keras64`` from the same run. All
implementations get the same inputs and weights (``conformance.sampling.cases.draw_arrays``,
seed 0) and the same thread count: ``--threads`` (default 1) goes to OpenBLAS and OpenMP
through the environment before NumPy is imported, to ``torch.set_num_threads`` and to
TensorFlow's intra- and inter-op pools. The calls of one repeat run one after the other
(reference, torch, keras), so drift on a shared machine hits every implementation alike; short
calls get more repeats (as many as fit in 0.25 s of the slowest call, up to 200). With more than
one thread, numbers are only meaningful on an otherwise idle machine. The script runs itself again with glibc's
allocator told to keep freed memory (see ``MALLOC_SETTINGS``) unless ``--default-malloc``.

Peak memory (``--no-memory`` skips it) is measured in separate runs, after the timings:

- reference: ``tracemalloc`` (NumPy reports every array buffer to it), the peak above the
  memory held before the call, so inputs and weights are excluded and the output is included;
- PyTorch float64: the profiler's CPU memory events (``profile_memory=True``: every allocation
  and free of PyTorch's CPU allocator, with its time); the peak of their running sum over the
  call, so again inputs and weights excluded, output included.

Neither side sees what BLAS allocates internally (OpenBLAS buffers, oneDNN scratchpads). A
benchmark, not a test: numbers depend on the machine, its BLAS and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Larger size per layer: (config, input shapes). Convolutional layers get a 56 x 56 x 256 map
# (their configs scaled to match), attention layers a 28 x 28 map, token layers 28 x 28 + 1
# or 56 x 56 tokens, the MLPs the widths of their 2021 models (Mixer-B/16, gMLP-S at 28 x 28).
LARGE = {
    "anti_alias_downsample": ({"kernel_size": 3, "strides": 2}, ((2, 56, 56, 256),)),
    "batchnorm_with_activation": ({}, ((2, 56, 56, 256),)),
    "conv2d_no_bias": ({"filters": 256, "kernel_size": 3, "strides": 1, "padding": "SAME"}, ((1, 56, 56, 256),)),
    "se_module": ({"se_ratio": 0.25}, ((2, 56, 56, 256),)),
    "MHSAWithPositionEmbedding": ({"num_heads": 4, "key_dim": 128}, ((1, 28, 28, 256),)),
    "cot_attention": ({"kernel_size": 3}, ((1, 56, 56, 256),)),
    "ConvPositionalEncoding": ({"kernel_size": 3}, ((2, 785, 256),)),
    "ConvRelativePositionalEncoding": ({"head_splits": [2, 3, 3], "head_kernel_size": [3, 5, 7]}, ((2, 8, 785, 32), (2, 8, 785, 32))),
    "layer_norm": ({}, ((2, 56, 56, 256),)),
    "HaloAttention": ({}, ((1, 28, 28, 256),)),
    "rsoftmax": ({"groups": 2}, ((64, 1, 1, 1024),)),
    "split_attention_conv2d": ({"filters": 256}, ((1, 56, 56, 256),)),
    "outlook_attention": ({"embed_dim": 192, "num_head": 6}, ((1, 56, 56, 192),)),
    "outlook_attention_simple": ({"embed_dim": 192, "num_head": 6}, ((1, 56, 56, 192),)),
    "BiasLayer": ({}, ((2, 56, 56, 256),)),
    "PositionalEmbedding": ({}, ((2, 56, 56, 256),)),
    "ClassToken": ({}, ((2, 3136, 256),)),
    "mlp_block": ({"hidden_dim": 768}, ((2, 784, 192),)),
    "mixer_block": ({"tokens_mlp_dim": 384, "channels_mlp_dim": 3072}, ((2, 196, 768),)),
    "ChannelAffine": ({}, ((2, 56, 56, 256),)),
    "spatial_gating_block": ({}, ((2, 784, 1536),)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for every library (default 1)")
    parser.add_argument("--repeat", type=int, default=7, help="best of N timed calls (default 7)")
    parser.add_argument("--layer", action="append", help="only these layers (repeatable)")
    parser.add_argument("--size", choices=("readme", "large"), action="append", help="only these sizes (repeatable)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras columns (no TensorFlow import)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory columns")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's allocator defaults (see MALLOC_SETTINGS)")
    return parser.parse_args(argv)


MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}
"""glibc keeps freed memory for the next allocation instead of handing it back to the kernel
(``mallopt(3)``). Otherwise whether a fresh output array costs a page fault per 4 KiB depends
on the process's allocation history, which moved single timings of either library by up to 3x
between otherwise identical runs. Set for both libraries alike (they both allocate through
glibc); ``--default-malloc`` leaves glibc's defaults."""


def environment(args) -> dict[str, str]:
    """What must be in the environment before NumPy, PyTorch or TensorFlow start."""
    wanted = {variable: str(args.threads) for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    wanted["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.default_malloc:
        wanted.update(MALLOC_SETTINGS)
    return wanted


def main(argv=None) -> int:
    """Run the benchmark in this process (the allocator settings need a fresh process: see
    ``__main__``); the thread counts only hold if NumPy is not imported yet."""
    args = parse_args(argv)
    # The allocator settings are only in force if they were in the environment at start-up.
    args.malloc_tuned = all(os.environ.get(k) == v for k, v in MALLOC_SETTINGS.items())
    os.environ.update({k: v for k, v in environment(args).items() if not k.startswith("MALLOC_")})
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import _frameworks

    return _frameworks.run(args, LARGE)


if __name__ == "__main__":
    wanted = environment(parse_args())
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        # glibc reads its tunables when the process starts: run again with them set.
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    raise SystemExit(main())
