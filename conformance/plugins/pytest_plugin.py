"""pytest plugin (registered as ``attnconf`` through the ``pytest11`` entry point).

Options, each with an environment variable for CI systems:

``--impl SPEC`` / ``ATTNCONF_IMPL`` (comma-separated)
    Implementations to check: ``tf``, ``torch``, ``numpy`` or ``module:attribute``.
    Repeatable. Default: ``tf`` and ``torch``.
``--attnconf-profile {ci,thorough}`` / ``ATTNCONF_PROFILE``
    ``ci`` (default): deterministic (derandomized, no example database), few examples.
    ``thorough``: random, many examples, with Hypothesis' example database.
``--examples N`` / ``ATTNCONF_EXAMPLES``
    Hypothesis examples per test, overriding the profile's count.
``--attnconf-expect FILE`` / ``ATTNCONF_EXPECT``
    Known deviations (TOML, see ``conformance.checks.expectations``): matching failures pass,
    as in ``attnconf check --expect``.
``--attnconf-strict`` / ``ATTNCONF_STRICT=1``
    Fail every test with a case not checked (unsupported or not implemented), as
    ``attnconf check --strict``. Without it such a test passes (or skips when it checked nothing),
    and the summary "attnconf: cases not checked" counts its cases.

In the ci profile the conformance tests draw exactly the cases ``attnconf check`` draws (the
same seed per layer and dtype), so the two routes give the same verdicts.

The profile applies to every Hypothesis test of the run unless ``--hypothesis-profile`` is given.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, settings

from conformance.contract import load_implementation, portable_ref
from conformance.checks.engine import Candidate, CaseRun, expected_output, run_case
from conformance.sampling.cases import Case

DEFAULT_IMPLS = ("tf", "torch")
PROFILE_EXAMPLES = {"ci": 25, "thorough": 200}
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def register_profiles(examples: int | None = None) -> None:
    # ci: the same cases on every run and no example database; thorough: fresh random cases,
    # remembering failures in Hypothesis' database.
    deterministic = {"ci": {"derandomize": True, "database": None}, "thorough": {}}
    for profile, options in deterministic.items():
        settings.register_profile(
            f"attnconf-{profile}",
            max_examples=examples or PROFILE_EXAMPLES[profile],
            deadline=None,
            print_blob=True,
            suppress_health_check=_SUPPRESSED,
            **options,
        )


def pytest_addoption(parser):
    group = parser.getgroup("attnconf", "attention-layer conformance")
    group.addoption("--impl", action="append", default=None, metavar="SPEC", help="implementation to check: tf, torch, numpy or module:attribute (repeatable)")
    group.addoption("--attnconf-profile", choices=sorted(PROFILE_EXAMPLES), default=None, help="ci (deterministic, default) or thorough")
    group.addoption("--examples", type=int, default=None, metavar="N", help="Hypothesis examples per test")
    group.addoption("--attnconf-expect", default=None, metavar="FILE", help="known deviations (TOML), as attnconf check --expect (or ATTNCONF_EXPECT)")
    group.addoption("--attnconf-strict", action="store_true", default=False, help="fail tests with unsupported or not implemented cases, as attnconf check --strict (or ATTNCONF_STRICT=1)")


_ACTIVE = {"profile": "ci"}


def pytest_configure(config):
    examples = config.getoption("examples") or (int(os.environ["ATTNCONF_EXAMPLES"]) if os.environ.get("ATTNCONF_EXAMPLES") else None)
    register_profiles(examples)
    profile = config.getoption("attnconf_profile") or os.environ.get("ATTNCONF_PROFILE", "ci")
    if profile not in PROFILE_EXAMPLES:
        raise pytest.UsageError(f"ATTNCONF_PROFILE={profile!r}: must be one of {sorted(PROFILE_EXAMPLES)}")
    _ACTIVE["profile"] = profile
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile(f"attnconf-{profile}")


def strict_mode(config) -> bool:
    """``--attnconf-strict`` or ``ATTNCONF_STRICT`` (1, true or yes)."""
    return bool(config.getoption("attnconf_strict", False)) or os.environ.get("ATTNCONF_STRICT", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Lets the assertions (``conformance.plugins.assertions``) count a test's unchecked cases
    in its ``user_properties``, which travel with its report (to the pytest-xdist controller too)."""
    from conformance.plugins import assertions

    assertions._RUNNING["item"] = item
    try:
        yield
    finally:
        assertions._RUNNING["item"] = None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """"attnconf: cases not checked": each test that passed (or failed under --attnconf-strict)
    with cases it did not check, with its counts and first reason, and the totals with those of
    the tests skipped because they checked nothing, in the words of ``attnconf check``."""
    from conformance.plugins.assertions import PROPERTY, REASON_PROPERTY, UNCHECKED

    names = {name: status for status, name in PROPERTY.items()}
    listed, skipped = [], {"tests": 0, "counts": dict.fromkeys(UNCHECKED, 0)}
    totals = dict.fromkeys(UNCHECKED, 0)
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            properties = dict(getattr(report, "user_properties", ()) or ())
            counts = {names[name]: int(n) for name, n in properties.items() if name in names}
            if not any(counts.values()):
                continue
            for status, n in counts.items():
                totals[status] += n
            if outcome == "skipped":
                skipped["tests"] += 1
                for status, n in counts.items():
                    skipped["counts"][status] += n
                continue
            # (under pytest -n, pytest-xdist appends "@group" to the ids of grouped tests)
            nodeid = re.sub(r"@[^\[\]@]*$", "", report.nodeid)
            listed.append((nodeid, outcome, counts, properties.get(REASON_PROPERTY, "")))
    if not any(totals.values()):
        return

    def words(counts):
        return ", ".join(f"{counts[status]} {status}" for status in UNCHECKED if counts.get(status))

    terminalreporter.write_sep("=", "attnconf: cases not checked")
    for nodeid, outcome, counts, reason in sorted(listed):
        terminalreporter.write_line(f"{outcome.upper()} {nodeid}: {words(counts)}; first: {reason}")
    def tests(n, what):
        return f"{n} {what.replace('tests', 'test')}" if n == 1 else f"{n} {what}"

    parts = [f"{words({s: sum(c.get(s, 0) for _, _, c, _ in listed) for s in UNCHECKED})} in {tests(len(listed), 'tests listed above')}"] if listed else []
    if skipped["tests"]:
        parts.append(f"{words(skipped['counts'])} in {tests(skipped['tests'], 'skipped tests that checked nothing')}")
    note = "--attnconf-strict: each fails" if strict_mode(config) else "not checked, never a pass; --attnconf-strict fails them"
    terminalreporter.write_line(f"total: {words(totals)} ({'; '.join(parts)}); {note}")


def search_settings(layer: str, dtype: str):
    """Decorator for a test's drawn-case search: in the ci profile, seeded like ``attnconf
    check``'s search for the same layer and dtype, so both routes draw the same cases."""
    from hypothesis import seed

    from conformance.sampling.strategies import search_seed

    def decorate(test):
        return seed(search_seed(layer, dtype))(test) if _ACTIVE["profile"] == "ci" else test

    return decorate


@pytest.fixture(scope="session")
def deviations(request):
    """Known deviations from ``--attnconf-expect`` / ``ATTNCONF_EXPECT``; none by default."""
    from conformance.checks import expectations

    path = request.config.getoption("attnconf_expect") or os.environ.get("ATTNCONF_EXPECT")
    return expectations.load(path) if path else []


def requested_impls(config) -> tuple[list[str], bool]:
    """The implementation specs to check, and whether they were asked for explicitly."""
    given = config.getoption("impl")
    if given:
        return [s for item in given for s in item.split(",") if s], True
    env = os.environ.get("ATTNCONF_IMPL")
    if env:
        return [s for s in env.split(",") if s], True
    return list(DEFAULT_IMPLS), False


_CANDIDATES: dict[str, Candidate | str] = {}


def candidate(ref: str, explicit: bool) -> Candidate:
    """Load once per session. A default implementation whose framework is missing is skipped;
    one asked for explicitly that fails to load is an error."""
    if ref not in _CANDIDATES:
        try:
            impl = load_implementation(ref)
            _CANDIDATES[ref] = Candidate(portable_ref(ref), impl)
        except ImportError as exc:
            if explicit:
                raise
            _CANDIDATES[ref] = f"{ref}: cannot import ({exc})"
    loaded = _CANDIDATES[ref]
    if isinstance(loaded, str):
        pytest.skip(reason=loaded)
    return loaded


def pytest_collection_finish(session):
    """Everything alive after collection (TensorFlow, PyTorch and Hypothesis modules, the
    collected tests) lives to the end of the run: frozen out of the garbage collector's passes,
    which otherwise walk it again and again while cases allocate (about 7% of a run's time)."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup``, every test sharing ``case_runs`` for one layer and
    dtype runs on the same worker, so the agreement tests find the per-implementation runs of
    their cases in that worker's cache (verdicts are the same either way; only the time differs).
    First, so that pytest-xdist sees the groups."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "case_runs" in getattr(item, "fixturenames", ()) and "layer" in params:
            item.add_marker(pytest.mark.xdist_group(f"attnconf-{params['layer']}-{params.get('dtype', '')}"))


def pytest_generate_tests(metafunc):
    if "impl_ref" in metafunc.fixturenames:
        refs, _ = requested_impls(metafunc.config)
        metafunc.parametrize("impl_ref", refs)
    if "impl_pair" in metafunc.fixturenames:
        refs, _ = requested_impls(metafunc.config)
        pairs = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1 :]]
        metafunc.parametrize("impl_pair", pairs, ids=[f"{a}-vs-{b}" for a, b in pairs])


class CaseRuns:
    """Each (implementation, case) runs once per session, each case's reference output is
    computed once: the per-implementation tests and the agreement tests draw the same cases, and
    the agreement tests then only compare outputs already computed. A run is deterministic (its
    case's seed fixes inputs and weights), so a repeat could only repeat the verdict.

    Only outcomes and outputs are kept, not inputs or weights. Under ``pytest -n`` each worker
    has its own cache; the tests of one layer and dtype are grouped onto one worker
    (:func:`pytest_collection_modifyitems`), and a test whose runs were made on another worker
    would make them again (pytest-xdist 3.8 cannot group under pytest 9, hence ``pytest<9`` in the
    test extra)."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], CaseRun] = {}
        self._expected: dict[str, object] = {}
        self._gradients: dict[tuple[str, str], tuple] = {}
        self._differences: dict[str, dict] = {}

    def run(self, candidate: Candidate, case: Case) -> CaseRun:
        key = case.to_json()
        if (candidate.ref, key) not in self._runs:
            arrays = case.arrays()
            if key not in self._expected:
                self._expected[key] = expected_output(case, arrays)
            self._runs[(candidate.ref, key)] = run_case(candidate, case, arrays, self._expected[key])
        return self._runs[(candidate.ref, key)]

    def gradients(self, candidate: Candidate, case: Case) -> tuple:
        """``(outcome, canonical gradients or None, dtype)`` of the gradients check of ``case``
        (``checks/gradients.py``), as ``attnconf check`` runs it: float64 when the implementation
        declares it, else float32; the reference's finite differences computed once per case."""
        from conformance.checks import gradients

        key = case.to_json()
        if (candidate.ref, key) not in self._gradients:
            dtype = gradients.gradient_dtype(candidate.impl)
            outcome, grads = gradients.run_gradients(candidate, case, case.arrays(), self._differences.setdefault(key, {}), dtype=dtype)
            self._gradients[(candidate.ref, key)] = (outcome, grads, dtype)
        return self._gradients[(candidate.ref, key)]


@pytest.fixture(scope="session")
def case_runs() -> CaseRuns:
    return CaseRuns()


@pytest.fixture(scope="session")
def impl_explicit(request) -> bool:
    return requested_impls(request.config)[1]
