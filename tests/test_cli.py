"""The attnconf command line: exit codes, reports, fixtures and docs commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_check_on_the_reference_wrapper_passes_and_writes_both_reports(tmp_path, capsys):
    assert main(["check", "--impl", "numpy", "--layers", "BiasLayer", "mlp_block", "--examples", "3", "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "BiasLayer" in out and "mlp_block" in out and "all checks passed" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True and report["implementations"] == ["numpy"]
    assert report["drawn_cases"]["BiasLayer/float32"] >= 3
    numerics = [c for c in report["cells"] if c["check"] == "numerics"]
    assert numerics and all("headroom" in c and "max_abs_error" in c for c in numerics)
    assert main(["check", "--impl", "numpy", "--layers", "BiasLayer", "--examples", "2", "--report", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("# attnconf check")


def test_check_fails_with_exit_1_for_a_broken_implementation(capsys):
    assert main(["check", "--impl", "tests.broken_impls:misnamed_weight", "--layers", "ChannelAffine", "--examples", "2"]) == 1
    out = capsys.readouterr().out
    assert "weights: ChannelAffine on misnamed" in out and "missing weight" in out


@pytest.mark.parametrize("argv, message", [
    (["check", "--impl", "numpy", "--layers", "NoSuchLayer"], "unknown layer"),
    (["check", "--impl", "no_such_module:impl"], "no module named 'no_such_module' on the Python path; install it, add its folder to PYTHONPATH, or name the file"),
    (["check", "--impl", "conformance.contract:LAYOUTS"], "missing name"),
    (["check", "--impl", "numpy", "--case", '{"layer": "NoSuchLayer", "input_shapes": [[1, 2]]}'], "unknown layer 'NoSuchLayer'"),
])
def test_usage_errors_exit_2_with_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_not_implemented_is_reported_and_fails_only_with_strict(capsys):
    argv = ["check", "--impl", "tests.test_cli:partial", "--layers", "BiasLayer", "ChannelAffine", "--examples", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "n/i" in out
    assert main(argv + ["--strict"]) == 1


class _Partial:
    """The reference wrapper minus ChannelAffine."""

    def __init__(self):
        from conformance.numpy_impl import implementation

        self._impl, self.name, self.layout, self.dtypes = implementation, "partial", "channels_last", ("float32",)

    def not_implemented(self):
        return {"ChannelAffine": "left for later"}

    def build(self, *args):
        return self._impl.build(*args)


partial = _Partial


def test_fixtures_verify_and_check_commands(capsys):
    assert main(["fixtures", "verify"]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["fixtures", "check", "--impl", "numpy", "--only", "mlp_block/small_gelu"]) == 0
    out = capsys.readouterr().out
    assert "mlp_block/small_gelu" in out and "pass" in out


def test_console_script_and_module_entry_points_agree():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [
        subprocess.run([sys.executable, "-m", "conformance", "docs", "--check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120),
    ]
    script = Path(sys.executable).parent / "attnconf"
    if script.exists():
        runs.append(subprocess.run([str(script), "docs", "--check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120))
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "up to date" in run.stdout


def test_the_ci_profile_gives_the_same_report_twice(tmp_path):
    # Determinism: derandomized draws, seeded arrays, no example database. Timings aside, two
    # runs must agree to the byte.
    reports = []
    for run in ("first", "second"):
        target = tmp_path / f"{run}.json"
        assert main(["check", "--impl", "numpy", "--layers", "mlp_block", "ChannelAffine", "--report", str(target)]) == 0
        payload = json.loads(target.read_text())
        payload.pop("seconds")
        reports.append(payload)
    assert reports[0] == reports[1]


def test_spreading_the_layers_over_processes_gives_the_same_report(tmp_path):
    # Failures, shrunk cases, a known deviation and a stale one, unsupported cases: the merged
    # report of two processes is the one a single process writes.
    expect = tmp_path / "expect.toml"
    expect.write_text(
        '[[deviation]]\nimplementation = "two_slips"\nlayer = "mlp_block"\ncheck = "numerics"\nreason = "declared for the test"\n\n'
        '[[deviation]]\nimplementation = "two_slips"\nlayer = "ChannelAffine"\ncheck = "numerics"\nreason = "never fails: stale"\n'
    )
    reports = {}
    for jobs in ("1", "2"):
        target = tmp_path / f"{jobs}.json"
        args = ["check", "--impl", "tests.broken_impls:two_slips", "--impl", "tests.broken_impls:partial", "--impl", "numpy",
                "--layers", "BiasLayer", "mlp_block", "ChannelAffine", "--examples", "5", "--expect", str(expect), "--jobs", jobs, "--report", str(target)]
        assert main(args) == 1
        reports[jobs] = json.loads(target.read_text())
        reports[jobs].pop("seconds")
    assert reports["1"] == reports["2"]
    assert "known deviation" in json.dumps(reports["1"]) and "stale" in json.dumps(reports["1"]), "the test must exercise what it claims"


def test_a_seeded_thorough_run_repeats_and_another_seed_draws_other_cases():
    from conformance.checks.engine import Candidate
    from conformance.numpy_impl import ReferenceImplementation
    from conformance.runners.runner import CheckSettings, check

    def drawn(seed):
        built = []

        class Recording(ReferenceImplementation):
            def build(self, layer, config, input_shapes, dtype):
                built.append((layer, dict(config), tuple(input_shapes), dtype))
                return super().build(layer, config, input_shapes, dtype)

        settings = CheckSettings(examples=5, deterministic=False, seed=seed, dtypes=("float64",), cross=False)
        check([Candidate("numpy", Recording())], ["BiasLayer"], settings, progress=lambda message: None)
        return built

    assert drawn(1) == drawn(1)
    assert drawn(1) != drawn(2)
