"""Isolated runtimes (conformance/isolation.py): an implementation in its own worker process.

The probe and the isolated twins of the reference wrapper live in tests/isolated_impls.py.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import reference
from conformance.checks.engine import Candidate, PASS, _exception, run_case, run_rejections
from conformance.cli import main
from conformance.contract import BUILTIN_IMPLEMENTATIONS, ContractError, load_implementation
from conformance.isolation import IsolatedImplementation, Isolation, RemoteTraceback, WorkerError, isolate, isolation_of
from conformance.checks.tolerances import DTYPES
from conformance.numpy_impl import ReferenceImplementation
from conformance.reports import report
from conformance.runners.runner import CheckSettings, check
from conformance.sampling.cases import Case
from tests import broken_impls

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "tests" / "isolated_impls.py"
HAS_JAX = importlib.util.find_spec("jax") is not None
NO_JAX = 'JAX is not installed (pip install -c constraints/ci.txt -e ".[test,jax]")'


def _gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` has exited (a zombie awaiting its reaper counts) within ``within`` s."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


def _line_of(text: str) -> int:
    return next(i for i, line in enumerate(HELPERS.read_text().splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def probe():
    impl = load_implementation("tests.isolated_impls:probe")
    yield impl
    impl.close()


# --------------------------------------------------------------------------------------------
# The process boundary


def _specials(dtype):
    info = np.finfo(dtype)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    payload_nan = (np.array([np.nan], dtype).view(uint) | uint(5)).view(dtype)[0]  # a NaN with a payload
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, payload_nan, info.smallest_subnormal, -info.smallest_subnormal,
                     info.smallest_normal, info.tiny / 3, info.max, -info.max, info.eps, 1 / 3, np.pi], dtype)


def test_arrays_cross_the_boundary_bit_for_bit(probe):
    rng = np.random.default_rng(0)
    arrays = []
    for dtype in (np.float32, np.float64):
        specials = _specials(dtype)
        arrays += [
            specials,
            specials.astype(specials.dtype.newbyteorder(">")),            # byte order kept
            rng.standard_normal((3, 4, 5)).astype(dtype).transpose(2, 0, 1),  # non-contiguous
            np.asfortranarray(rng.standard_normal((4, 6)).astype(dtype)),
            np.array(-0.0, dtype),                                          # rank 0
            np.zeros((0, 3), dtype),                                        # empty
        ]
    built = probe.build("echo", {}, ((1,),), "float64")
    echoed, digests, dtypes = built.forward(*arrays)
    for sent, back, digest, dtype in zip(arrays, echoed, digests, dtypes):
        # what the worker saw, byte for byte, and what came back
        assert digest == __import__("hashlib").sha256(np.ascontiguousarray(sent).tobytes()).hexdigest()
        assert dtype == sent.dtype.str and back.dtype == sent.dtype and back.shape == sent.shape
        assert np.ascontiguousarray(back).tobytes() == np.ascontiguousarray(sent).tobytes()
        assert back.flags.writeable


def test_weights_and_initial_weights_cross_exactly_and_initial_weights_only_where_the_real_layer_has_it(probe):
    plain = probe.build("weights", {"weights": {"w": (16,)}}, ((1,),), "float64")
    assert not hasattr(plain, "initial_weights")  # the init check then reads "not implemented"
    assert plain.weight_shapes() == {"w": (16,)}
    weights = {"w": _specials(np.float64), "v": _specials(np.float32)}
    plain.load_weights(weights)
    back = plain.forward(np.zeros(1))
    assert {k: v.tobytes() for k, v in back.items()} == {k: v.tobytes() for k, v in weights.items()}
    with_init = probe.build("weights", {"initial": True}, ((1,),), "float64")
    np.testing.assert_array_equal(with_init.initial_weights()["w"], np.arange(3.0))


def test_the_worker_runs_with_the_declared_environment_and_the_parent_keeps_its_own(probe, monkeypatch):
    info = probe.build("env", {}, ((1,),), "float32").forward(np.zeros(1))
    assert info["pid"] == probe.pid != os.getpid()
    assert info["in_worker"] is True
    assert info["env"] == {"ATTNCONF_PROBE": "set in the worker", "ATTNCONF_PROBE_UNSET": None}
    assert "ATTNCONF_PROBE" not in os.environ
    assert probe.name == "probe" and probe.layout == "channels_last" and probe.dtypes == ("float32", "float64")
    assert probe.not_implemented() == {"ClassToken": "the probe implements nothing"}


def test_one_worker_per_implementation(probe):
    again = load_implementation("tests.isolated_impls:probe")
    assert again is probe and again.pid == probe.pid
    from tests import isolated_impls

    assert isolate(isolated_impls.probe, "tests.isolated_impls:probe") is probe


def test_prints_in_the_worker_do_not_disturb_the_answers(probe, capfd):
    x = np.arange(4.0)
    np.testing.assert_array_equal(probe.build("print", {}, ((4,),), "float64").forward(x), x)
    time.sleep(0.2)  # the worker's stderr is forwarded by a thread
    assert "a raw write to fd 1 in the worker" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# Exceptions


@pytest.mark.parametrize("kind", ["ValueError", "TypeError", "NotImplementedError", "ZeroDivisionError", "RuntimeError"])
def test_a_builtin_exception_arrives_with_its_type_message_and_the_workers_frame(probe, kind):
    with pytest.raises(getattr(__import__("builtins"), kind)) as info:
        probe.build("x", {"raise": kind, "message": f"no {kind} here"}, ((1,),), "float32")
    exc = info.value
    assert type(exc).__name__ == kind and str(exc) == f"no {kind} here"
    innermost = traceback.extract_tb(exc.__traceback__)[-1]
    assert (innermost.filename, innermost.lineno, innermost.name) == (str(HELPERS), _line_of("raise getattr(builtins, kind)(message)"), "_raise")
    assert _exception(exc) == f"{kind}: no {kind} here (at {HELPERS}:{innermost.lineno})"  # as reports print it
    assert isinstance(exc.__cause__, RemoteTraceback) and "Traceback (most recent call last)" in str(exc.__cause__)


def test_exception_arguments_cross_too(probe):
    with pytest.raises(KeyError) as info:
        probe.build("x", {"raise": "keyerror", "message": "query"}, ((1,),), "float32")
    assert info.value.args == ("query",)
    with pytest.raises(FileNotFoundError) as info:  # OSError(2, ...) is rebuilt as Python builds it
        probe.build("x", {"raise": "oserror", "message": "gone"}, ((1,),), "float32")
    assert info.value.errno == 2


def test_an_imported_exception_class_keeps_its_type_and_an_unknown_one_falls_back_to_its_builtin_base(probe):
    with pytest.raises(reference.DomainError, match="mlp_block: hidden_dim 0 must be >= 1"):
        probe.build("x", {"raise": "domain"}, ((1,),), "float32")
    with pytest.raises(ValueError) as info:
        probe.build("x", {"raise": "foreign", "message": "from elsewhere"}, ((1,),), "float32")
    assert type(info.value) is ValueError
    assert str(info.value) == "attnconf_probe_only_in_worker.ProbeError: from elsewhere"
    assert "attnconf_probe_only_in_worker" not in sys.modules  # nothing was imported here


def test_results_that_cannot_cross_are_clear_errors(probe):
    with pytest.raises(TypeError, match="cannot be sent back to the suite"):
        probe.build("unpicklable", {}, ((1,),), "float32").forward(np.zeros(1))
    with pytest.raises(WorkerError, match="attnconf_probe_only_in_worker.Opaque, and 'attnconf_probe_only_in_worker' is not imported here"):
        probe.build("foreign", {}, ((1,),), "float32").forward(np.zeros(1))
    pid = probe.pid
    with pytest.raises(TypeError, match="the arguments of build\\(\\) cannot be sent to the worker"):
        probe.build("echo", {"callback": lambda: None}, ((1,),), "float32")
    assert probe.build("echo", {}, ((1,),), "float32").forward(np.ones(1))[0][0].tolist() == [1.0]  # still in step
    assert probe.pid == pid


# --------------------------------------------------------------------------------------------
# Life cycle


def test_built_layers_are_released_in_the_worker_when_collected(probe):
    census = probe.build("census", {}, ((1,),), "float32")
    gc.collect()  # layers of earlier tests: released with the next request
    before = census.forward(np.zeros(1))
    layers = [probe.build("echo", {}, ((1,),), "float32") for _ in range(20)]
    assert census.forward(np.zeros(1)) == before + 20
    del layers
    gc.collect()
    assert census.forward(np.zeros(1)) == before


@pytest.mark.parametrize("layer, config, status", [("exit", {"status": 3}, "exited with status 3"), ("kill", {}, "was killed by SIGKILL")])
def test_a_crash_is_a_clear_error_and_the_next_call_starts_a_new_worker(layer, config, status):
    impl = IsolatedImplementation("tests.isolated_impls:probe", Isolation(env={"ATTNCONF_PROBE": "crash test"}))
    try:
        first = impl.pid
        survivor = impl.build("echo", {}, ((1,),), "float32")
        with pytest.raises(WorkerError, match=f"its worker process {status} during a call on a built layer") as info:
            impl.build(layer, config, ((1,),), "float32").forward(np.zeros(1))
        assert "the next call starts a new worker" in str(info.value)
        if layer == "exit":
            assert "about to exit" in str(info.value)  # the end of the worker's stderr
        assert not isinstance(info.value, (ValueError, TypeError))  # never read as a rejection
        with pytest.raises(WorkerError, match="built in a worker process that has since exited"):
            survivor.forward(np.zeros(1))
        assert impl.build("echo", {}, ((1,),), "float32").forward(np.ones(1))[0][0].tolist() == [1.0]
        assert impl.pid not in (None, first)
    finally:
        impl.close()


def test_a_restarted_worker_must_declare_the_same_name():
    impl = load_implementation("tests.isolated_impls:probe_renamed")
    try:
        with pytest.raises(WorkerError, match="exited"):
            impl.build("exit", {}, ((1,),), "float32").forward(np.zeros(1))
        with pytest.raises(WorkerError, match="the restarted worker declares"):
            impl.build("echo", {}, ((1,),), "float32")
    finally:
        impl.close()


def test_a_call_past_the_declared_timeout_kills_the_worker():
    impl = load_implementation("tests.isolated_impls:probe_with_timeout")
    try:
        slow = impl.build("sleep", {"seconds": 30}, ((1,),), "float32")
        started = time.perf_counter()
        with pytest.raises(WorkerError, match="no answer to a call on a built layer within 1.0 s"):
            slow.forward(np.zeros(1))
        assert time.perf_counter() - started < 10
        assert impl.pid is None
        assert impl.build("sleep", {"seconds": 0}, ((1,),), "float32").forward(np.ones(1)).tolist() == [1.0]
    finally:
        impl.close()


def test_close_stops_the_worker_and_a_new_load_starts_another():
    impl = load_implementation("tests.isolated_impls:probe_with_timeout")
    pid = impl.pid
    impl.close()
    assert impl.closed and impl.pid is None and _gone(pid, within=1)
    with pytest.raises(WorkerError, match="closed"):
        impl.build("echo", {}, ((1,),), "float32")
    fresh = load_implementation("tests.isolated_impls:probe_with_timeout")
    assert fresh is not impl and fresh.pid not in (None, pid)
    fresh.close()


def test_no_worker_outlives_its_parent():
    script = "from conformance.contract import load_implementation; print(load_implementation('tests.isolated_impls:probe').pid)"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    assert _gone(pid, within=10), f"worker {pid} still runs after its parent exited"


def test_a_worker_ends_when_its_parent_is_killed_mid_call():
    script = (
        "import sys; from conformance.contract import load_implementation; import numpy as np\n"
        "impl = load_implementation('tests.isolated_impls:probe'); print(impl.pid, flush=True)\n"
        "impl.build('sleep', {'seconds': 120}, ((1,),), 'float32').forward(np.zeros(1))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        time.sleep(0.5)
        parent.kill()
        parent.wait(timeout=30)
        assert _gone(pid, within=15), f"worker {pid} still runs after its parent was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def test_a_declaration_can_name_what_the_worker_loads():
    impl = load_implementation("tests.isolated_impls:declared_numpy")
    assert isinstance(impl, IsolatedImplementation) and impl.name == "numpy" and impl.target == "conformance.numpy_impl:implementation"
    built = impl.build("ChannelAffine", {}, ((2, 3),), "float64")
    assert built.weight_shapes() == {"weight": (3,), "bias": (3,)}


def test_a_worker_that_cannot_load_its_target_raises_the_import_error_here(capsys):
    # the worker's ContractError (a module that is not on its path), rebuilt as one here
    with pytest.raises(ContractError, match="no module named 'attnconf_no_such_module' on the Python path"):
        load_implementation("tests.isolated_impls:declared_missing")
    assert main(["check", "--impl", "tests.isolated_impls:declared_missing", "--layers", "BiasLayer"]) == 2  # one clear line
    assert "no module named 'attnconf_no_such_module'" in capsys.readouterr().err


@pytest.mark.parametrize("declared, message", [
    ({"env": {"A": 1}}, "env must map names to strings"),
    ({"envs": {}}, "isolation keys \\['envs'\\] are unknown"),
    ({"env": {}, "timeout": -1}, "timeout must be a positive number"),
    ("KERAS_BACKEND=jax", "isolation must be a mapping"),
])
def test_a_malformed_declaration_is_a_contract_error(declared, message):
    class Declared:
        isolation = declared

    with pytest.raises(ContractError, match=message):
        isolation_of(Declared(), "declared")


def test_without_a_declaration_nothing_changes():
    impl = load_implementation("numpy")
    assert isolate(impl, "numpy") is impl and isolation_of(impl) is None


# --------------------------------------------------------------------------------------------
# The suite through the proxy: the same verdicts as in process


def _verdicts(result):
    """{(layer, check, dtype): counts by status} of the one implementation checked."""
    return {(layer, chk, dtype): dict(tally.counts) for (layer, subject, chk, dtype), tally in result.tallies.items() if " vs " not in subject}


def test_the_isolated_reference_wrapper_gets_the_same_verdicts_as_in_process():
    settings = CheckSettings(examples=3)
    layers = ["BiasLayer", "mlp_block", "MHSAWithPositionEmbedding"]
    in_process = check([Candidate("numpy", load_implementation("numpy"))], layers, settings, progress=lambda m: None)
    isolated = check([Candidate("tests.isolated_impls:numpy_isolated", load_implementation("tests.isolated_impls:numpy_isolated"))], layers, settings, progress=lambda m: None)
    assert not in_process.failed and not isolated.failed
    assert _verdicts(isolated) == _verdicts(in_process)
    assert any(chk == "rejects" for _, chk, _ in _verdicts(isolated))


@pytest.mark.parametrize("attribute, case", [
    ("off_by_1e3", Case("mlp_block", {"hidden_dim": 5}, ((2, 3, 4),), 1, "float64")),
    ("crashing", Case("BiasLayer", {}, ((1, 1, 3, 2),), 2, "float32")),
    ("misnamed_weight", Case("ChannelAffine", {}, ((2, 5),), 3, "float32")),
    ("no_initial_values", Case("ChannelAffine", {}, ((2, 5),), 3, "float32")),
])
def test_a_broken_implementation_fails_the_same_way_isolated(attribute, case):
    in_process = run_case(Candidate("ref", getattr(broken_impls, attribute)), case).outcomes
    isolated = run_case(Candidate("ref", load_implementation(f"tests.isolated_impls:{attribute}")), case).outcomes
    assert [(o.check, o.status, o.detail) for o in isolated] == [(o.check, o.status, o.detail) for o in in_process]
    assert any(o.status != PASS for o in isolated)


def test_rejections_pass_through_the_proxy():
    outcomes = run_rejections(Candidate("iso", load_implementation("tests.isolated_impls:numpy_isolated")), "mlp_block")
    assert outcomes and all(o.status == PASS for o in outcomes), [o.detail for o in outcomes if o.status != PASS]


def test_cli_checks_an_isolated_implementation_beside_an_in_process_one(capsys):
    argv = ["check", "--impl", "numpy", "--impl", "tests.isolated_impls:numpy_isolated", "--layers", "ChannelAffine", "--examples", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "numpy-isolated" in out and "all checks passed" in out


# --------------------------------------------------------------------------------------------
# keras-jax and keras-torch: the project's Keras layers on the other Keras backends


def test_the_keras_backends_are_bundled_and_import_no_framework_here():
    assert BUILTIN_IMPLEMENTATIONS["keras-jax"] == "impls.keras_backends:keras_jax"
    assert BUILTIN_IMPLEMENTATIONS["keras-torch"] == "impls.keras_backends:keras_torch"
    done = subprocess.run([sys.executable, "-c", "import sys, impls.keras_backends; print(sorted({'keras', 'torch', 'jax', 'tensorflow'} & set(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_keras_backend_used_in_the_wrong_process_says_how_to_load_it():
    import keras

    from impls.keras_backends import KerasOnBackend

    running = keras.backend.backend()
    other = "torch" if running != "torch" else "jax"
    with pytest.raises((RuntimeError, ImportError), match=f"runs the '{running}' backend; load it with conformance.contract.load_implementation\\('keras-{other}'\\)|needs jax"):
        KerasOnBackend(other).not_implemented()


def test_keras_jax_without_jax_says_how_to_install_it(monkeypatch):
    from impls.keras_backends import KerasOnBackend

    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now fails, as where it is not installed
    with pytest.raises(ImportError, match=r'keras-jax needs jax: pip install "attnconf\[jax\]"'):
        KerasOnBackend("jax").build("BiasLayer", {}, ((1, 2),), "float32")


@pytest.fixture(scope="module")
def keras_workers():
    """keras-torch (and keras-jax, where JAX is installed) held for the module's Keras-backend
    tests: a worker lives while its implementation is referenced, and each start imports Keras
    and probes float64 (several seconds), so these tests, the CLI's loads included, share one."""
    held = [load_implementation("keras-torch")] + ([load_implementation("keras-jax")] if HAS_JAX else [])
    yield held
    for impl in held:
        impl.close()


def KERAS_BACKENDS(test):
    """Under pytest -n these tests share one pytest worker, and there the workers of
    :func:`keras_workers`."""
    return pytest.mark.xdist_group("keras-backends")(pytest.mark.usefixtures("keras_workers")(test))


@KERAS_BACKENDS
def test_keras_torch_passes_with_the_cross_check_against_tf(capsys):
    # (every layer on all four implementations is a manual run: README, "Isolated runtimes")
    layers = ["MHSAWithPositionEmbedding", "ConvRelativePositionalEncoding"]
    argv = ["check", "--impl", "tf", "--impl", "keras-torch", "--layers", *layers, "--examples", "2", "--dtypes", "float32"]  # float32: what it declares
    assert main(argv) == 0, capsys.readouterr().out[-3000:]
    assert "keras-torch" in capsys.readouterr().out


@KERAS_BACKENDS
@pytest.mark.skipif(not HAS_JAX, reason=NO_JAX)
def test_keras_jax_passes_with_the_cross_check_against_tf(capsys):
    # JAX compiles every new shape (about a second a case here): one layer
    argv = ["check", "--impl", "tf", "--impl", "keras-jax", "--layers", "ConvRelativePositionalEncoding", "--examples", "2", "--dtypes", "float32"]
    assert main(argv) == 0, capsys.readouterr().out[-3000:]
    assert "keras-jax" in capsys.readouterr().out


@KERAS_BACKENDS
@pytest.mark.parametrize("backend", ["keras-torch", pytest.param("keras-jax", marks=pytest.mark.skipif(not HAS_JAX, reason=NO_JAX))])
def test_keras_backend_gradients_agree_with_tensorflows(backend):
    # Keras 3.15 does not compute float64 on these backends, so the gradients check runs them in
    # float32; agreement with the TensorFlow backend's GradientTape shows their own autodiff is wired.
    rng = np.random.default_rng(0)
    layer, config, shapes = "mlp_block", {"hidden_dim": 6}, ((2, 3, 4),)
    weights = {k: rng.standard_normal(v).astype(np.float32) for k, v in reference.weight_shapes(layer, *shapes, **config).items()}
    x = rng.standard_normal(shapes[0]).astype(np.float32)
    cotangent = rng.standard_normal(shapes[0]).astype(np.float32)
    results = []
    for spec in ("tf", backend):
        built = load_implementation(spec).build(layer, config, shapes, "float32")
        built.load_weights(weights)
        results.append(built.gradients([x], cotangent))
    (want_inputs, want_weights), (got_inputs, got_weights) = results
    np.testing.assert_allclose(got_inputs[0], want_inputs[0], rtol=1e-5, atol=1e-5)
    assert sorted(got_weights) == sorted(want_weights) == sorted(weights)
    for name in weights:
        np.testing.assert_allclose(got_weights[name], want_weights[name], rtol=1e-5, atol=1e-5)


class _Float32OnlyReference(ReferenceImplementation):
    """The reference wrapper declaring float32 only, with the reason, in a worker process."""

    name = "numpy-float32"
    dtypes = ("float32",)
    dtype_notes = {"float64": "this probe computes float64 in float32"}
    isolation = {"env": {"ATTNCONF_DTYPE_NOTES_PROBE": "1"}}


float32_only_reference = _Float32OnlyReference()


def test_the_reason_a_dtype_is_not_declared_crosses_the_boundary_into_the_report():
    impl = load_implementation("tests.test_isolation:float32_only_reference")
    try:
        assert isinstance(impl, IsolatedImplementation) and impl.dtypes == ("float32",)
        assert impl.dtype_notes == {"float64": "this probe computes float64 in float32"}
        result = check([Candidate("f32", impl)], ["ChannelAffine"], CheckSettings(examples=1, cross=False, training=False), progress=lambda m: None)
        reason = "dtype float64 not declared by numpy-float32: this probe computes float64 in float32"
        assert result.tallies[("ChannelAffine", "numpy-float32", "numerics", "float64")].reasons == {reason}
        assert reason in report.text(result, DTYPES)
        row = report.rows(result, DTYPES)[0]
        assert row["float64"] == "n/i" and row["gradients"].startswith("ok 2") and row["gradients"].endswith("[float32]")
        assert not result.failed
    finally:
        impl.close()


@KERAS_BACKENDS
def test_keras_torch_says_why_it_does_not_declare_float64():
    impl = load_implementation("keras-torch")
    if "float64" in impl.dtypes:
        pytest.skip(reason="this Keras computes float64 on the torch backend (keras-team/keras#23704 fixed)")
    assert "keras-team/keras#23704" in impl.dtype_notes["float64"] and "ops." in impl.dtype_notes["float64"]


def test_a_built_layer_keeps_its_worker_alive_when_nothing_else_holds_the_implementation():
    built = IsolatedImplementation("tests.isolated_impls:probe", Isolation(env={"ATTNCONF_PROBE": "held by its layer"})).build("echo", {}, ((1,),), "float32")
    gc.collect()
    assert built.forward(np.ones(1))[0][0].tolist() == [1.0]
