"""``attnconf``: check implementations, manage golden fixtures, generate the layer docs.

    attnconf check [--impl SPEC ...] [--layers NAME ...] [--report FILE.json|FILE.md]
    attnconf fixtures regenerate | verify | check --impl SPEC
    attnconf docs [--check]
    attnconf convert [--layer NAME (--config JSON --input-shape B,H,W,C | --example NAME)] --from FORMAT SRC --to FORMAT DST [--dtype DTYPE]

Exit status: 0 when everything checked passed, 1 on any failure, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import reference

PROFILES = {"ci": (25, True), "thorough": (200, False)}
"""Profile -> (drawn cases per layer and dtype, deterministic)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnconf", description="Conformance suite for the keras_cv_attention_models (2021) attention layers.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="check implementations against the reference and each other")
    check.add_argument("--impl", action="append", metavar="SPEC", help="tf, torch, numpy, module:attribute or path/to/file.py:attribute (repeatable; default: tf and torch)")
    check.add_argument("--layers", nargs="+", metavar="NAME", help="layers to check (default: all)")
    check.add_argument("--dtypes", nargs="+", metavar="DTYPE", help="dtypes to check: float32 float64 (the default), float16 bfloat16 (opt-in half precision)")
    check.add_argument("--profile", choices=sorted(PROFILES), default="ci", help="ci: deterministic, 25 drawn cases per layer and dtype; thorough: random, 200 (both also run every documented example and edge case)")
    check.add_argument("--examples", type=int, metavar="N", help="drawn cases per layer and dtype (overrides the profile)")
    check.add_argument("--seed", type=int, metavar="N", help="with --profile thorough: Hypothesis seed, so a random run can be repeated (scripts/soak.sh)")
    check.add_argument("--no-cross", action="store_true", help="skip the implementation-vs-implementation comparison")
    check.add_argument("--strict", action="store_true", help="fail unless everything was checked: unsupported cases, not implemented layers and stale deviations fail the run")
    check.add_argument("--expect", metavar="FILE", type=Path, help="known deviations (TOML): matching failures are reported as known, with their reasons")
    check.add_argument("--traceback", action="store_true", help="print the full traceback of every error an implementation raised")
    check.add_argument("--case", metavar="JSON", help="run exactly this case (as printed in a failure's reproduce command); an out-of-domain case runs the rejection check")
    check.add_argument("--report", metavar="FILE", type=Path, action="append", help="also write the report to FILE: .json, .md, .xml (JUnit) or .png (heatmap); repeatable")
    check.add_argument("--jobs", metavar="N", default=os.environ.get("ATTNCONF_JOBS", "auto"), type=_jobs,
                       help="processes to spread the layers over: a number, or auto (one per CPU, at most 4; the default, or ATTNCONF_JOBS); 1 runs in this process. The report is the same")

    fixtures = commands.add_parser("fixtures", help="golden fixtures")
    fixtures.add_argument("action", choices=("regenerate", "verify", "check"))
    fixtures.add_argument("--dir", type=Path, help="fixtures folder (default: the checkout's fixtures/)")
    fixtures.add_argument("--impl", action="append", metavar="SPEC", help="for check: implementations (default: tf and torch)")
    fixtures.add_argument("--only", nargs="+", metavar="NAME", help="for check: only these fixtures (e.g. mlp_block/small_gelu)")
    fixtures.add_argument("--check", action="store_true", help="for regenerate: write nothing; exit 1 if any fixture or the manifest would change beyond float64 round-off (for CI)")
    fixtures.add_argument("--verbose", action="store_true", help="for verify: list every fixture that differs from this machine's reference by round-off only")

    docs = commands.add_parser("docs", help="write docs/layers.md from the layer specs")
    docs.add_argument("--check", action="store_true", help="fail if the file is not up to date instead of writing it")
    docs.add_argument("--output", type=Path, help="where to write (default: docs/layers.md of this checkout)")

    from conformance.io import convert as _convert

    convert = commands.add_parser("convert", help="move a layer's weights between a Keras .weights.h5, a PyTorch safetensors state dict and a canonical safetensors file",
                                  usage=_convert.USAGE, epilog=_convert.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _convert.add_arguments(convert)
    return parser


def _candidates(specs: list[str] | None):
    from conformance.contract import load_implementation, portable_ref
    from conformance.checks.engine import Candidate

    loaded = [(spec, load_implementation(spec)) for spec in (specs or ["tf", "torch"])]
    # Reproduce commands name each implementation so that they run from a fresh shell anywhere.
    return [Candidate(portable_ref(spec), impl) for spec, impl in loaded]


def _jobs(text: str) -> str | int:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of processes or auto")
    return int(text)


def _usage(message: str) -> int:
    print(f"attnconf: error: {message}", file=sys.stderr)
    return 2


def cmd_check(args) -> int:
    from conformance.checks import expectations
    from conformance.checks.engine import ERROR, run_rejection
    from conformance.checks.tolerances import DTYPES, KNOWN_DTYPES
    from conformance.reports import report
    from conformance.runners.parallel import auto_jobs, check_in_processes
    from conformance.runners.runner import CheckSettings, RunResult, check
    from conformance.sampling.cases import Case

    layers = args.layers or list(reference.names())
    unknown = [l for l in layers if l not in reference.names()]
    if unknown:
        return _usage(f"unknown layer(s) {unknown}; the layers are: {', '.join(reference.names())}")
    dtypes = tuple(args.dtypes or DTYPES)
    if any(d not in KNOWN_DTYPES for d in dtypes):
        return _usage(f"dtypes must be among {KNOWN_DTYPES}")
    examples, deterministic = PROFILES[args.profile]
    if args.seed is not None and deterministic:
        return _usage("--seed applies to --profile thorough; the ci profile always draws the same cases")
    try:
        expected = expectations.load(args.expect) if args.expect else []
    except expectations.ExpectationError as exc:
        return _usage(f"--expect: {exc}")
    opts = CheckSettings(examples=args.examples or examples, deterministic=deterministic, dtypes=dtypes, cross=not args.no_cross, seed=args.seed, expected=expected)
    case = None
    if args.case:
        try:
            case = Case.from_json(args.case)
            reference.spec(case.layer)
        except (ValueError, KeyError) as exc:
            return _usage(f"--case: {exc}")
        dtypes = (case.dtype,)

    specs = args.impl or ["tf", "torch"]
    jobs = 1 if case is not None else auto_jobs(len(layers)) if args.jobs == "auto" else min(args.jobs, len(layers))
    summary = f"{len(layers)} layer(s); dtypes {', '.join(dtypes)}; {opts.examples} drawn cases per layer and dtype" if case is None else f"one case: {case.describe()}"
    if jobs > 1:
        # The processes load the implementations; this one only merges and reports.
        print(f"attnconf check: spec {reference.SPEC_VERSION}; implementations {', '.join(specs)}; {summary}", file=sys.stderr)
        impl_names, result = check_in_processes(specs, layers, opts, jobs, progress=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        candidates = _candidates(specs)
        impl_names = [c.name for c in candidates]
        print(f"attnconf check: spec {reference.SPEC_VERSION}; implementations {', '.join(f'{c.name} ({c.ref})' for c in candidates)}; {summary}", file=sys.stderr)
        if case is not None and not _in_domain(case):
            result = RunResult()
            for c in candidates:
                result.record(expectations.apply([run_rejection(c, case)], expected)[0])
        else:
            result = check(candidates, layers, opts, only_case=case)
    if case is not None:
        print(_case_details(result))
    print(report.text(result, dtypes, args.strict))
    if args.traceback:
        for o in result.failures:
            if o.status == ERROR and o.traceback:
                print(f"\ntraceback of {o.impl} on {o.case.describe() if o.case else o.layer}:\n{o.traceback}")
    settings = {"profile": args.profile, "examples": opts.examples, "deterministic": opts.deterministic, "seed": opts.seed, "cross": opts.cross, "layers": layers, "strict": args.strict, "impl_specs": specs}
    for target in args.report or []:
        if target.suffix == ".json":
            target.write_text(report.as_json(result, dtypes, impl_names, settings, args.strict), encoding="utf-8")
        elif target.suffix == ".xml":
            from conformance.reports import junit

            junit.write(result, target)
        elif target.suffix == ".png":
            from conformance.reports import heatmap

            heatmap.write(result, dtypes, target)
        else:
            target.write_text(report.markdown(result, dtypes, impl_names, args.strict), encoding="utf-8")
        print(f"report written to {target}", file=sys.stderr)
    return 0 if report.passed(result, args.strict) else 1


def _in_domain(case) -> bool:
    try:
        reference.validate(case.layer, *case.input_shapes, **case.config)
    except ValueError:
        return False
    return True


def _case_details(result) -> str:
    """Every outcome of the one case, with its full detail."""
    lines = []
    for o in sorted((o for o in _outcomes(result)), key=lambda o: (o.impl, o.check)):
        lines.append(f"{o.check} [{o.impl}, {o.dtype}]: {o.status}: {o.detail}")
    return "\n".join(lines) + "\n"


def _outcomes(result):
    seen = []
    for tally in result.tallies.values():
        seen.extend(tally.outcomes)
    return seen


def cmd_fixtures(args) -> int:
    from conformance.io import fixtures

    directory = args.dir or fixtures.default_dir()
    if args.action == "regenerate":
        try:
            done = fixtures.regenerate(directory, check=args.check)
        except fixtures.FixtureFolderError as exc:
            return _usage(str(exc))
        would = "would be " if args.check else ""
        for file, why in done.rewritten.items():
            print(f"{would}rewritten: {file}: {why[0].removeprefix(file + ': ')}" + (f" (and {len(why) - 1} more difference(s))" if len(why) > 1 else ""))
        for file in done.new:
            print(f"{would}new: {file}")
        for file in done.removed:
            print(f"{would}removed: {file} (no fixture of this spec)")
        for file in done.strays:
            print(f"left alone: {file} (not a fixture file; verify fails until it is removed)")
        manifest = ("would change" if args.check else "updated") if done.manifest_changed else "unchanged"
        counts = (f"{len(done.unchanged)} kept unchanged, {len(done.roundoff)} kept within float64 round-off, {len(done.rewritten)} rewritten, "
                  f"{len(done.new)} new, {len(done.removed)} removed; {fixtures.MANIFEST} {manifest}")
        if args.check:
            print(f"{len(done.generated)} fixtures in {directory} (--check: nothing written): {counts}")
            return 1 if done.changed else 0
        size = fixtures.folder_size(directory)
        print(f"{len(done.generated)} fixtures in {directory} ({size / 1e6:.2f} MB): {counts}")
        if size > fixtures.SIZE_BUDGET_BYTES:
            print(f"attnconf: fixtures use {size} bytes, over the {fixtures.SIZE_BUDGET_BYTES}-byte budget", file=sys.stderr)
            return 1
        return 0
    if args.action == "verify":
        problems, notes = fixtures.verify(directory)
        if notes:
            # Round-off is expected on another CPU: one line, the files only when asked.
            print(f"note: {fixtures.roundoff_summary(notes)}")
            for note in notes if args.verbose else []:
                print(f"note: {note}")
        for problem in problems:
            print(f"FAIL: {problem}")
        if problems:
            print(f"fixtures in {directory}: {len(problems)} problem(s)")
        else:  # a verified manifest lists each fixture once
            print(f"{len(fixtures.load_manifest(directory)['fixtures'])} fixtures in {directory}: verified")
        return 1 if problems else 0
    from conformance.checks.engine import ERROR, FAIL, FAILING, NOT_IMPLEMENTED, PASS, UNSUPPORTED

    failed = False
    for candidate in _candidates(args.impl):
        outcomes = fixtures.check_implementation(candidate, directory, args.only)
        by_fixture: dict[tuple[str, str], list] = {}
        for o in outcomes:
            by_fixture.setdefault((o.case.label, o.dtype), []).append(o)
        verdicts: dict[str, int] = {}
        for (name, dtype), group in by_fixture.items():
            status = _fixture_status([o.status for o in group])
            verdicts[status] = verdicts.get(status, 0) + 1
            numerics = next((o for o in group if o.comparison is not None), None)
            extra = f" {numerics.comparison.max_abs:.1e} ({numerics.comparison.tolerance_used:.1%} of tolerance)" if numerics else ""
            unchecked = next((o for o in group if o.status in (UNSUPPORTED, NOT_IMPLEMENTED)), None) if status != PASS else None
            reason = f": {unchecked.detail.splitlines()[0]}" if unchecked is not None and status in (UNSUPPORTED, NOT_IMPLEMENTED) else ""
            print(f"{candidate.name:8s} {dtype:8s} {name:50s} {status}{extra}{reason}")
            for o in group:
                if o.status in FAILING:
                    failed = True
                    print(o.detail)
        order = (PASS, FAIL, ERROR, UNSUPPORTED, NOT_IMPLEMENTED)
        counts = ", ".join(f"{verdicts[s]} {s}" for s in order if verdicts.get(s))
        print(f"{candidate.name}: {len(by_fixture)} fixture runs: {counts or 'none'}")
        if not any(verdicts.get(s) for s in (PASS, FAIL, ERROR)):
            failed = True
            print(f"{candidate.name}: NOTHING CHECKED: no fixture ran on it, so there is nothing to pass")
    return 1 if failed else 0


def _fixture_status(statuses: list[str]) -> str:
    """One fixture in one dtype: failed or raised if any check did; checked only if every check
    ran (a not-run check follows a failure, so it never stands alone)."""
    from conformance.checks.engine import ERROR, FAIL, NOT_IMPLEMENTED, PASS, UNSUPPORTED

    for status in (FAIL, ERROR, UNSUPPORTED):
        if status in statuses:
            return status
    if all(s == NOT_IMPLEMENTED for s in statuses):
        return NOT_IMPLEMENTED
    return PASS


def cmd_docs(args) -> int:
    from conformance.reports import docs

    target = args.output or docs.default_path()
    text = docs.render()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"{target} is out of date; run: attnconf docs", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


def cmd_convert(args) -> int:
    from conformance.io import convert

    return convert.command(args, _usage)


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up lines (CPU features, absl) would precede every message; the
    # environment still decides when it sets the level itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        return {"check": cmd_check, "fixtures": cmd_fixtures, "docs": cmd_docs, "convert": cmd_convert}[args.command](args)
    except Exception as exc:  # contract or import problems: one clear line, not a traceback
        from conformance.contract import ContractError

        from conformance.runners.parallel import ProcessDied

        if isinstance(exc, (ContractError, ImportError, ProcessDied)):
            return _usage(str(exc))
        raise


if __name__ == "__main__":
    sys.exit(main())
