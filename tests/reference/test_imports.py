"""The reference stands alone: importing it (and running a layer) loads no framework."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_and_running_the_reference_loads_no_framework():
    script = (
        "import sys, numpy as np, reference\n"
        "reference.forward('mlp_block', np.ones((1, 2, 3)), weights={k: np.ones(s) for k, s in reference.weight_shapes('mlp_block', (1, 2, 3), hidden_dim=4).items()}, hidden_dim=4)\n"
        "print(sorted({'tensorflow', 'torch', 'keras', 'jax', 'scipy', 'hypothesis'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
