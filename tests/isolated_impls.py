"""Implementations declared as isolated, for tests/test_isolation.py.

Each object here is loaded twice: in the test process, where only its ``isolation`` is read and a
proxy comes back, and in the worker, where it runs. Nothing here imports a framework.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import os
import sys
import time
import types
import weakref

import numpy as np

import reference
from conformance.numpy_impl import ReferenceImplementation
from tests import broken_impls

PROBE_ENV = {"ATTNCONF_PROBE": "set in the worker", "ATTNCONF_PROBE_UNSET": None}


class IsolatedReference(ReferenceImplementation):
    """The reference wrapper, in a worker process."""

    name = "numpy-isolated"
    isolation = {"env": {"ATTNCONF_ISOLATED_REFERENCE": "1"}}


numpy_isolated = IsolatedReference()


def _isolated_copy(impl):
    twin = copy.copy(impl)
    twin.isolation = {"env": {"ATTNCONF_ISOLATED_BROKEN": impl.name}}
    return twin


off_by_1e3 = _isolated_copy(broken_impls.off_by_1e3)
crashing = _isolated_copy(broken_impls.crashing)
misnamed_weight = _isolated_copy(broken_impls.misnamed_weight)
no_initial_values = _isolated_copy(broken_impls.no_initial_values)


# --------------------------------------------------------------------------------------------
# A probe: its "layers" exercise the process boundary


def _foreign_module() -> types.ModuleType:
    """A module that exists only in the worker: its classes cannot be rebuilt in the parent."""
    module = sys.modules.get("attnconf_probe_only_in_worker")
    if module is None:
        module = types.ModuleType("attnconf_probe_only_in_worker")

        class ProbeError(ValueError):
            pass

        class Opaque:
            pass

        ProbeError.__module__ = Opaque.__module__ = module.__name__
        ProbeError.__qualname__, Opaque.__qualname__ = "ProbeError", "Opaque"
        module.ProbeError, module.Opaque = ProbeError, Opaque
        sys.modules[module.__name__] = module
    return module


class _Echo:
    def __init__(self, layer, config):
        self.layer, self.config, self.weights = layer, dict(config), {}

    def weight_shapes(self):
        return {name: tuple(shape) for name, shape in self.config.get("weights", {}).items()}

    def load_weights(self, weights):
        self.weights = dict(weights)

    def forward(self, *inputs):
        kind = self.layer
        if kind == "echo":
            return inputs, [hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in inputs], [x.dtype.str for x in inputs]
        if kind == "weights":
            return self.weights
        if kind == "env":
            from conformance import isolation

            return {
                "pid": os.getpid(),
                "in_worker": isolation._IN_WORKER,
                "env": {name: os.environ.get(name) for name in PROBE_ENV},
                "keras imported": "keras" in sys.modules,
            }
        if kind == "print":
            print("a print to stdout in the worker " * 100)
            sys.stdout.flush()
            os.write(1, b"a raw write to fd 1 in the worker\n")
            return inputs[0]
        if kind == "exit":
            print("about to exit", file=sys.stderr, flush=True)
            os._exit(self.config.get("status", 3))
        if kind == "kill":
            os.kill(os.getpid(), 9)
        if kind == "sleep":
            time.sleep(self.config["seconds"])
            return inputs[0]
        if kind == "unpicklable":
            return lambda: None
        if kind == "foreign":
            return _foreign_module().Opaque()
        if kind == "census":
            return len(_LIVE)
        raise ValueError(f"probe has no layer {kind!r}")


class _EchoWithInitialWeights(_Echo):
    def initial_weights(self):
        return {"w": np.arange(3.0)}


_LIVE: "weakref.WeakSet[_Echo]" = weakref.WeakSet()


def _raise(config):
    kind, message = config["raise"], config.get("message", "probe failure")
    if kind == "foreign":
        raise _foreign_module().ProbeError(message)
    if kind == "domain":
        reference.validate("mlp_block", (2, 3, 4), hidden_dim=0)
    if kind == "keyerror":
        raise KeyError(message)
    if kind == "oserror":
        raise OSError(2, message)
    raise getattr(builtins, kind)(message)


class Probe:
    name = "probe"
    layout = "channels_last"
    dtypes = ("float32", "float64")
    isolation = {"env": PROBE_ENV}

    def not_implemented(self):
        return {"ClassToken": "the probe implements nothing"}

    def build(self, layer, config, input_shapes, dtype):
        if "raise" in config:
            _raise(config)
        built = _EchoWithInitialWeights(layer, config) if config.get("initial") else _Echo(layer, config)
        _LIVE.add(built)
        return built


probe = Probe()


class ProbeWithTimeout(Probe):
    isolation = {"env": PROBE_ENV, "timeout": 1.0}


probe_with_timeout = ProbeWithTimeout()


class ProbeRenamedOnRestart(Probe):
    """Declares a different name in each worker (from the worker's pid), which the proxy refuses."""

    isolation = {"env": {"ATTNCONF_PROBE": "renamed"}}

    @property
    def name(self):
        return f"probe-{os.getpid()}"


probe_renamed = ProbeRenamedOnRestart()


class _Declaration:
    """Only a declaration: the worker loads ``target``."""

    def __init__(self, target):
        self.isolation = {"env": {"ATTNCONF_DECLARED": "1"}, "target": target}


declared_numpy = _Declaration("conformance.numpy_impl:implementation")
declared_missing = _Declaration("attnconf_no_such_module:implementation")
