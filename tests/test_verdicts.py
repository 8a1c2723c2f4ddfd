"""Verdicts that hide nothing: every case counted, every distinct failure reported, partial
support and crashes visible, known deviations declared, and the CLI and pytest routes agreeing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.checks import expectations
from conformance.checks.engine import ERROR, FAIL, Candidate
from conformance.cli import main
from conformance.reports import report
from conformance.runners.runner import CheckSettings, check
from tests import broken_impls

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": lambda message: None}


def _run(attribute, layers, **settings):
    candidate = Candidate(f"tests.broken_impls:{attribute}", getattr(broken_impls, attribute))
    return check([candidate], layers, CheckSettings(**{"dtypes": ("float64",), "cross": False, **settings}), **QUIET)


def test_a_changed_default_fails_although_every_explicit_config_passes():
    result = _run("changed_default", ["ChannelAffine"])
    weights = [o for o in result.failures if o.check == "weights"]
    assert weights and all("use_bias" not in o.case.config for o in weights), [o.detail for o in result.failures]
    assert "missing bias" in weights[0].detail


def test_two_independent_slips_are_both_reported_and_every_case_is_counted():
    result = _run("two_slips", ["mlp_block"])
    checks = {o.check for o in result.failures}
    assert {"weights", "numerics"} <= checks, [o.detail for o in result.failures]
    weights = result.tallies[("mlp_block", "two_slips", "weights", "float64")]
    ran = result.examples_run[("mlp_block", "float64")] + result.fixed_cases_run[("mlp_block", "float64")]
    assert sum(weights.counts.values()) == ran, (weights.counts, ran)
    numerics = result.tallies[("mlp_block", "two_slips", "numerics", "float64")]
    assert sum(numerics.counts.values()) == ran and numerics.counts.get("not run"), numerics.counts


def test_partial_support_is_shown_and_fails_only_under_strict(capsys):
    args = ["check", "--impl", "tests.broken_impls:partial", "--layers", "mlp_block", "--dtypes", "float64", "--no-cross"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"ok \d+, \d+ unsupported", out), out
    assert out.strip().splitlines()[-1].startswith("all checks passed (") and "unsupported" in out.strip().splitlines()[-1]
    assert main(args + ["--strict"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAILED (--strict)") and "unsupported" in last, last


def test_a_crash_is_an_error_never_a_check_failure():
    result = _run("crashing", ["BiasLayer"])
    errors = [o for o in result.failures if o.status == ERROR]
    assert errors and all(o.check == "error" for o in errors)
    assert "RuntimeError: reshape of a side of 1" in errors[0].detail and "broken_impls.py" in errors[0].detail
    assert not any(o.check == "weights" and o.status == FAIL for o in result.failures)
    row = next(r for r in report.rows(result, ("float64",)) if r["implementation"] == "crashing")
    assert "raised" in row["errors"] and "not run" in row["float64"], row


def test_declared_deviations_pass_with_their_reason_and_stale_ones_are_reported(tmp_path, capsys):
    deviations = tmp_path / "known.toml"
    deviations.write_text(
        '[[deviation]]\nimplementation = "crashing"\nlayer = "BiasLayer"\ncheck = "error"\n'
        'when = "height == 1 or width == 1"\nreason = "the port cannot reshape a side of 1"\n'
        '[[deviation]]\nimplementation = "crashing"\nlayer = "BiasLayer"\ncheck = "numerics"\nreason = "never happens"\n'
    )
    args = ["check", "--impl", "tests.broken_impls:crashing", "--layers", "BiasLayer", "--dtypes", "float64", "--no-cross", "--expect", str(deviations)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "the port cannot reshape a side of 1" in out and "stale deviation" in out and "never happens" in out
    assert main(args + ["--strict"]) == 1


def test_a_deviation_file_with_an_unsafe_condition_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[deviation]]\nimplementation = "x"\nlayer = "BiasLayer"\ncheck = "numerics"\nwhen = "__import__(\'os\')"\nreason = "r"\n')
    with pytest.raises(expectations.ExpectationError, match="Call"):
        expectations.load(bad)


def test_the_legend_explains_every_mark_a_cell_can_show():
    result = _run("crashing", ["BiasLayer", "ChannelAffine"])
    legend = report.legend(("float64",))
    for row in report.rows(result, ("float64",)):
        for column, cell in row.items():
            if column in ("layer", "implementation"):
                continue
            for mark in re.findall(r"\b(ok|FAIL|known|unsupported|not run|n/i|n/a|raised|none)\b|^-$", cell):
                assert mark in legend, f"{mark!r} (in {cell!r}) is not explained"


def test_an_out_of_domain_reproduce_command_runs_as_printed(capsys):
    case = '{"config":{"hidden_dim":0},"dtype":"float32","input_shapes":[[1,4,3]],"layer":"mlp_block","seed":0}'
    assert main(["check", "--impl", "numpy", "--case", case]) == 0
    out = capsys.readouterr().out
    assert "rejects [numpy, float32]: pass" in out, out


@pytest.mark.parametrize("attribute, layers", [("partial", ["mlp_block"]), ("crashing", ["BiasLayer"]), ("two_slips", ["mlp_block"]),
                                               ("slipped_backward", ["mlp_block", "batchnorm_with_activation"])],
                         ids=["partial", "crashing", "two_slips", "slipped_backward"])
def test_the_cli_and_pytest_give_the_same_verdict(attribute, layers, tmp_path):
    # slipped_backward: gradients wrong on mlp_block, the training step wrong on batchnorm
    cli = subprocess.run(
        [sys.executable, "-m", "conformance", "check", "--impl", f"tests.broken_impls:{attribute}", "--layers", *layers, "--dtypes", "float64", "--no-cross", "--report", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    cli_passed = json.loads((tmp_path / "r.json").read_text())["passed"]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "conformance/tests/test_conformance.py", "--impl", f"tests.broken_impls:{attribute}", "-k", f"({' or '.join(layers)}) and (float64 or gradients) and not fixtures and not agree"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert tests.returncode in (0, 1), tests.stdout + tests.stderr
    assert (tests.returncode == 0) == cli_passed == (cli.returncode == 0), (cli.stdout[-2000:], tests.stdout[-3000:])
    if attribute == "slipped_backward":  # each slip is caught on both routes, not one for both
        cells = json.loads((tmp_path / "r.json").read_text())["cells"]
        assert {(c["layer"], c["check"]) for c in cells if c["status"] == "fail"} == {("mlp_block", "gradients"), ("batchnorm_with_activation", "training")}, cells
        assert "FAILED conformance/tests/test_conformance.py::test_gradients[tests.broken_impls:slipped_backward-mlp_block]" in tests.stdout, tests.stdout[-3000:]
        assert "FAILED conformance/tests/test_conformance.py::test_training_mode[tests.broken_impls:slipped_backward-batchnorm_with_activation-float64]" in tests.stdout, tests.stdout[-3000:]


def _test_outcomes(junit_xml: Path) -> dict[str, str]:
    from junitparser import JUnitXml

    # (under pytest -n, pytest-xdist appends "@group" to the names of grouped tests)
    return {f"{case.classname}::{case.name.split('@')[0]}": type(case.result[0]).__name__ if case.result else "passed" for suite in JUnitXml.fromfile(str(junit_xml)) for case in suite}


def test_pytest_in_parallel_gives_the_serial_verdict_on_every_test(tmp_path):
    # Two workers against one: each test's outcome (pass, failure, skip) must be the same,
    # with the agreement tests included (they reuse per-worker runs, conformance.plugins).
    outcomes = {}
    for workers in ("0", "2"):
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider", "conformance/tests/test_conformance.py",
             "--impl", "tests.broken_impls:two_slips", "--impl", "numpy", "-k", "mlp_block and not fixtures",
             f"--junitxml={tmp_path / workers}.xml"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
        outcomes[workers] = _test_outcomes(tmp_path / f"{workers}.xml")
    assert outcomes["0"] == outcomes["2"]
    assert {"passed", "Failure"} <= set(outcomes["0"].values()), outcomes["0"]


def test_junit_and_heatmap_reports_show_failures_and_unsupported_cases(tmp_path, capsys):
    xml, png = tmp_path / "r.xml", tmp_path / "r.png"
    args = ["check", "--impl", "tests.broken_impls:crashing", "--impl", "tests.broken_impls:partial", "--layers", "BiasLayer", "mlp_block",
            "--dtypes", "float64", "--no-cross", "--report", str(xml), "--report", str(png)]
    assert main(args) == 1
    from junitparser import JUnitXml

    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(xml))}
    assert suites["BiasLayer"].errors >= 1, "the crash must be a JUnit error"
    # (the gradients check's two small cases both use activations partial lacks: a skip there is right)
    skipped = [case for case in suites["mlp_block"] if case.result and type(case.result[0]).__name__ == "Skipped" and " gradients " not in case.name]
    assert not skipped, "partial support with some checked cases is not a skip"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_printed_reproduce_command_runs_from_a_fresh_shell_in_another_directory(tmp_path, capsys):
    # The adapter is importable here only because the tests run from the checkout; the printed
    # command must not depend on that.
    assert main(["check", "--impl", "tests.broken_impls:off_by_1e3", "--layers", "BiasLayer", "--dtypes", "float64", "--no-cross", "--examples", "1"]) == 1
    command = next(line.split("reproduce: ", 1)[1] for line in capsys.readouterr().out.splitlines() if "reproduce: " in line)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "numerics [off_by_1e-3, float64]: fail" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def test_sys_exit_in_an_implementation_is_its_error_not_the_end_of_the_run(capsys):
    # SystemExit is not an Exception: uncaught, it ended the run with status 0 and no verdict.
    assert main(["check", "--impl", "tests.broken_impls:exiting", "--layers", "BiasLayer", "--dtypes", "float64", "--no-cross", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "SystemExit" in out and out.strip().splitlines()[-1].startswith("FAILED"), out[-2000:]


def test_a_failure_that_does_not_reproduce_is_reported_as_such_not_a_crash():
    broken_impls._StatefulLayer.calls = 0
    result = _run("stateful", ["ChannelAffine"])
    flaky = [o for o in result.failures if "not reproducible" in o.detail]
    assert len(flaky) == 1 and flaky[0].status == FAIL and len(result.failures) == 1, [o.detail for o in result.failures]
    assert result.failed and result.tallies[("ChannelAffine", "stateful", "numerics", "float64")].count(FAIL)


def test_a_process_that_dies_is_named_and_gives_no_verdict(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "conformance", "check", "--impl", "tests.broken_impls:process_killing", "--layers", "BiasLayer", "ChannelAffine",
         "--dtypes", "float64", "--no-cross", "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("attnconf: error: a check process died abruptly") and "BiasLayer" in last and "isolation" in last, last
    assert "Traceback" not in run.stderr and "all checks passed" not in run.stdout


def test_two_implementations_of_one_name_are_refused_not_merged(capsys):
    args = ["check", "--impl", "tests.broken_impls:crashing", "--impl", "tests.broken_impls:crashing", "--layers", "BiasLayer", "--dtypes", "float64", "--jobs", "1"]
    assert main(args) == 2
    assert "are all named 'crashing'" in capsys.readouterr().err


def test_a_run_where_nothing_was_checked_does_not_pass():
    from conformance.checks.engine import NOT_IMPLEMENTED, Outcome
    from conformance.runners.runner import RunResult

    result = RunResult()
    result.record(Outcome("numerics", "BiasLayer", "x", "float64", NOT_IMPLEMENTED, "dtype float64 not declared by x"))
    assert report.verdict(result).startswith("NOTHING CHECKED") and not report.passed(result)


def test_a_raise_in_the_gradients_check_reads_raised_not_a_failed_comparison():
    from conformance.checks.engine import PASS, Outcome
    from conformance.runners.runner import RunResult

    result = RunResult()
    result.record(Outcome("gradients", "BiasLayer", "x", "float64", PASS, "ok"))
    result.record(Outcome("gradients", "BiasLayer", "x", "float64", ERROR, "build raised RuntimeError: boom"))
    row = next(r for r in report.rows(result, ("float64",)))
    assert row["gradients"].startswith("ok 1, 1 raised"), row


def test_only_deviations_about_what_ran_can_be_stale(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(
        "".join(
            f'[[deviation]]\nimplementation = "{impl}"\nlayer = "{layer}"\ncheck = "numerics"\nreason = "r"\n\n'
            for impl, layer in [("a", "BiasLayer"), ("a", "mlp_block"), ("b", "BiasLayer"), ("a vs b", "BiasLayer"), ("a vs c", "BiasLayer"), ("*", "*")]
        )
    )
    deviations = expectations.load(path)
    stale = expectations.stale(deviations, ["BiasLayer"], ["a", "b"])
    assert [(d.implementation, d.layer) for d in stale] == [("a", "BiasLayer"), ("b", "BiasLayer"), ("a vs b", "BiasLayer"), ("*", "*")]


def test_not_implemented_must_name_layers_of_the_spec():
    from conformance.contract import ContractError, check_implementation
    from conformance.numpy_impl import ReferenceImplementation

    class Typo(ReferenceImplementation):
        def not_implemented(self):
            return {"HaloAtention": "not ported yet"}

    with pytest.raises(ContractError, match="HaloAtention"):
        check_implementation(Typo(), "typo")


def test_fixtures_check_never_reads_pass_for_what_raised_or_was_not_declared(capsys):
    assert main(["fixtures", "check", "--impl", "tests.broken_impls:exiting", "--only", "BiasLayer/small_feature_map"]) == 1
    out = capsys.readouterr().out
    assert "BiasLayer/small_feature_map" in out and " error" in out and " pass" not in out.split("exiting:")[-1], out[-2000:]
    assert main(["fixtures", "check", "--impl", "tests.broken_impls:half_only", "--only", "BiasLayer/small_feature_map"]) == 1
    out = capsys.readouterr().out
    assert "half_only: 2 fixture runs: 2 not implemented" in out and "NOTHING CHECKED" in out, out


def test_the_heatmap_colours_every_failed_raised_or_unchecked_cell_apart_from_a_pass():
    from conformance.reports import heatmap

    candidates = [Candidate(f"tests.broken_impls:{name}", getattr(broken_impls, name)) for name in ("slipped_backward", "partial", "crashing")]
    result = check(candidates, ["mlp_block", "batchnorm_with_activation"], CheckSettings(dtypes=("float64",), cross=False, examples=3), **QUIET)
    layers, columns, cells = heatmap.grid(result, ("float64",))
    status = {(layer, subject): cells[i][j][0] for i, layer in enumerate(layers) for j, (subject, _) in enumerate(columns)}
    # the backward-only slips (gradients, training) fail cells whose forward checks all pass
    assert status[("mlp_block", "slipped_backward")] == status[("batchnorm_with_activation", "slipped_backward")] == "failed", status
    assert status[("mlp_block", "partial")] == "unsupported" and status[("batchnorm_with_activation", "partial")] is None, status
    assert status[("batchnorm_with_activation", "crashing")] == "raised" and status[("mlp_block", "crashing")] is None, status  # it raises on maps with a side of 1


def test_junit_and_json_reports_carry_every_failure_and_the_unchecked_counts(tmp_path):
    from junitparser import JUnitXml

    xml, report_json = tmp_path / "r.xml", tmp_path / "r.json"
    args = ["check", "--impl", "tests.broken_impls:crashing", "--impl", "tests.broken_impls:partial", "--layers", "BiasLayer", "mlp_block",
            "--dtypes", "float64", "--no-cross", "--examples", "3", "--report", str(xml), "--report", str(report_json)]
    assert main(args) == 1
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(xml))}
    errors = [case.result[0] for suite in suites.values() for case in suite if case.result and type(case.result[0]).__name__ == "Error"]
    assert errors and all(e.type == "RuntimeError" for e in errors), [e.type for e in errors]
    properties = {p.name: int(p.value) for p in suites["mlp_block"].properties()}
    data = json.loads(report_json.read_text())
    assert properties.get("attnconf_unsupported", 0) > 0 and data["counts"]["unsupported"] > 0 and data["counts"]["raised"] > 0, (properties, data["counts"])
    assert any(r.startswith("unsupported: activation") for r in data["unchecked_reasons"]), data["unchecked_reasons"]
    assert all(f["reproduce"].startswith("attnconf check ") for f in data["failures"]), data["failures"]
    assert data["settings"]["impl_specs"] == ["tests.broken_impls:crashing", "tests.broken_impls:partial"]
