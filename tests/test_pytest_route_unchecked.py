"""The pytest route shows what it did not check, as ``attnconf check`` does: a test that passed
with unsupported cases is listed with their count in the summary "attnconf: cases not checked"
(serial and under pytest -n), ``--attnconf-strict`` fails it as ``attnconf check --strict`` does,
and a test that ran no case at all skips instead of passing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.plugins.assertions import skip_if_nothing_checked

ROOT = Path(__file__).resolve().parent.parent
PARTIAL = "tests.broken_impls:partial"  # mlp_block with gelu only: the other activations are unsupported
# The tests of mlp_block float64 that the CLI's cells below cover: documented examples, edge cases,
# drawn cases and gradients (the rejections have no unsupported cases, the fixtures none drawn).
SELECTION = "mlp_block and (float64 or gradients) and not fixtures and not agree"
SECTION = "attnconf: cases not checked"


def _pytest(*extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "conformance/tests/test_conformance.py", "--impl", PARTIAL, "-k", SELECTION, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def _section(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if SECTION in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("total: "))
    return lines[start + 1 : end + 1]


def _listed(section: list[str]) -> dict[str, int]:
    """test name -> its unsupported count, from the section's lines about single tests."""
    found = {}
    for line in section:
        match = re.match(r"(PASSED|FAILED) \S+::(\S+): (\d+) unsupported; first: unsupported: ", line)
        if match:
            found[match.group(2)] = int(match.group(3))
    return found


def _total(section: list[str]) -> int:
    return int(re.match(r"total: (\d+) unsupported", section[-1]).group(1))


@pytest.fixture(scope="module")
def cli_unsupported(tmp_path_factory) -> int:
    """The CLI's unsupported count on the same layer, dtype and checks (its verdict's count)."""
    report = tmp_path_factory.mktemp("cli") / "r.json"
    cli = subprocess.run(
        [sys.executable, "-m", "conformance", "check", "--impl", PARTIAL, "--layers", "mlp_block", "--dtypes", "float64", "--no-cross", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    data = json.loads(report.read_text())
    # The CLI counts per check (weights, output shape, numerics: the documented examples, edge
    # cases and drawn cases together; gradients) and the pytest route per test (examples, edge
    # cases and drawn cases apart, each with all its checks): the groups differ, the totals over
    # the same checks and cases do not.
    counts = {(c["check"], c["dtype"]): c["counts"].get("unsupported", 0) for c in data["cells"]}
    assert counts[("weights", "float64")] == counts[("numerics", "float64")] > 0 and counts[("gradients", "float64")] > 0, counts
    total = sum(counts.values())
    assert f"({total} unsupported)" in data["verdict"], data["verdict"]
    return total


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    """The selection's pytest run, serial and with two workers (each once for the tests below)."""
    return {workers: _pytest("-n", workers) for workers in ("0", "2")}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_passed_tests_with_unsupported_cases_are_listed_with_the_clis_count(workers, runs, cli_unsupported):
    run = runs[workers]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    section = _section(run.stdout)
    listed = _listed(section)
    # partial passes the examples and drawn cases it supports: those tests pass, with their
    # unsupported cases listed (the edge cases and gradients, all unsupported, skip).
    assert set(listed) == {"test_documented_examples[tests.broken_impls:partial-mlp_block-float64]",
                           "test_drawn_cases[tests.broken_impls:partial-mlp_block-float64]"}, section
    assert all(n > 0 for n in listed.values()) and all(line.startswith("PASSED ") for line in section[:-1]), section
    assert _total(section) == cli_unsupported, (section, cli_unsupported)
    assert "skipped tests that checked nothing" in section[-1], section
    assert re.search(r"2 passed, 2 skipped", run.stdout), run.stdout[-2000:]


def test_the_summary_is_the_same_serial_and_in_parallel(runs):
    assert _section(runs["0"].stdout) == _section(runs["2"].stdout), [r.stdout[-3000:] for r in runs.values()]


def test_strict_fails_every_test_with_unchecked_cases_naming_them(cli_unsupported):
    run = _pytest("-n", "0", "--attnconf-strict")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"--attnconf-strict: not everything was checked: \d+ unsupported of \d+ outcomes; first: mlp_block on partial: unsupported: activation", run.stdout), run.stdout[-3000:]
    assert "4 failed" in run.stdout, run.stdout[-2000:]
    section = _section(run.stdout)
    assert all(line.startswith("FAILED ") for line in section[:-1]) and _total(section) == cli_unsupported, section


@pytest.mark.parametrize("value, strict", [("1", True), ("yes", True), ("", False), ("0", False)])
def test_the_environment_turns_strict_mode_on_as_the_option_does(monkeypatch, value, strict):
    from conformance.plugins.pytest_plugin import strict_mode

    class Config:
        def getoption(self, name, default=None):
            return False

    monkeypatch.setenv("ATTNCONF_STRICT", value)
    assert strict_mode(Config()) is strict


def test_nothing_checked_at_all_is_a_skip_never_a_pass():
    with pytest.raises(pytest.skip.Exception, match="nothing checked: no case ran"):
        skip_if_nothing_checked([])
