"""Isolated runtimes: an implementation that runs in its own worker process and environment.

Some implementations cannot share a process with the others: Keras 2 code needs
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, and Keras 3 picks its backend from
``KERAS_BACKEND`` once, at import. Such an implementation declares it, and
:func:`conformance.contract.load_implementation` then returns a proxy that fulfils the same
contract while every call runs in a worker process started with that environment::

    class MyKeras2Implementation:
        name, layout, dtypes = "mylib-keras2", "channels_last", ("float32", "float64")
        isolation = {"env": {"TF_USE_LEGACY_KERAS": "1"}}
        ...  # not_implemented() and build() as usual; import TensorFlow inside them, or in a
             # module only the worker imports (``target``), never at the top of this module

``isolation`` is a mapping (or an :class:`Isolation`) with the keys

- ``env``: ``{name: value}`` set in the worker's environment on top of this process's; a value of
  ``None`` removes the variable there;
- ``target`` (optional): the ``module:attribute`` the worker loads, when it is not the spec this
  object was loaded from (so the declaring module can stay free of heavy imports);
- ``timeout`` (optional): seconds any one call (``build`` or a built layer's method) may take
  before the worker is killed (default: none; starting the worker is not timed). A thread per
  worker reads its answers into a queue, and the wait is on that queue, so the timeout works
  wherever Python threads do (no ``select`` on a pipe, which is POSIX only).

The worker imports the target after its environment is set, loads it with the ordinary
``load_implementation`` (declarations are not followed again inside a worker), and answers calls.
The proxy:

- reads ``name``, ``layout``, ``dtypes``, the optional ``dtype_notes`` (why a dtype is not
  declared) and ``not_implemented()`` once, when the worker starts;
- forwards ``build``, and every public method of the built layer (``weight_shapes``,
  ``load_weights``, ``forward``, and the optional ones exactly where the real built layer has
  them: a check that looks for ``initial_weights`` or ``gradients`` finds the same on both);
- moves arguments and results with :mod:`pickle`, which stores a NumPy array as its dtype
  (byte order included), shape and raw bytes: every value, -0.0, subnormals, infinities and NaN
  payloads crosses bit for bit. Results are unpickled with only the modules this process has
  already imported, so a worker never makes this process import its framework;
- re-raises an exception from the worker as the same type when that type is a builtin or is
  already imported here (``ValueError``, ``NotImplementedError``, ``reference.DomainError``...),
  otherwise as its nearest such base class with the original type's name before the message. Its
  innermost traceback frame is the worker's innermost frame (file and line), and its
  ``__cause__`` carries the worker's whole traceback as text;
- starts one worker per (target, environment), shared by every load of the same spec;
- raises :class:`WorkerError` (a ``RuntimeError``) when the worker dies or times out, with its
  exit status and the end of its stderr; the next call starts a new worker, and layers built in
  the dead one raise :class:`WorkerError` when used.

A worker is this Python (``sys.executable``) with this process's ``sys.path``. Workers are closed
when the proxy is garbage-collected, by :meth:`IsolatedImplementation.close` and at interpreter
exit, and a worker ends by itself within a second of its parent's death (even mid-computation). A
worker's stdout and stderr are forwarded to this process's stderr (its stdout cannot disturb the
answers, which travel on a pipe of their own).
"""

from __future__ import annotations

import atexit
import builtins
import collections
import inspect
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping

from conformance.contract import BUILTIN_IMPLEMENTATIONS, ContractError

PROTOCOL = 5
_HEADER = struct.Struct(">Q")
_STDERR_TAIL_LINES = 40
_CLOSE_WAIT_S = 10.0

_IN_WORKER = False  # set by _serve(): inside a worker, declarations are not followed again


@dataclass(frozen=True)
class Isolation:
    """An implementation's declaration that it runs in its own process (see the module docstring)."""

    env: Mapping[str, str | None] = field(default_factory=dict)
    target: str | None = None
    timeout: float | None = None

    def env_key(self) -> tuple[tuple[str, str | None], ...]:
        return tuple(sorted(self.env.items()))


class WorkerError(RuntimeError):
    """The worker process of an isolated implementation died, timed out or lost a built layer."""


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception re-raised from a worker: the worker's traceback."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n(in the worker process)\n" + self.text


def isolation_of(impl: Any, label: str = "") -> Isolation | None:
    """The object's ``isolation`` declaration, checked; None when it has none."""
    declared = getattr(impl, "isolation", None)
    if declared is None or declared is False:
        return None
    label = label or repr(impl)
    if declared is True:
        return Isolation()
    if isinstance(declared, Isolation):
        iso = declared
    elif isinstance(declared, Mapping):
        unknown = sorted(set(declared) - {"env", "target", "timeout"})
        if unknown:
            raise ContractError(f"implementation {label}: isolation keys {unknown} are unknown (env, target, timeout)")
        iso = Isolation(env=dict(declared.get("env") or {}), target=declared.get("target"), timeout=declared.get("timeout"))
    else:
        raise ContractError(f"implementation {label}: isolation must be a mapping with env/target/timeout, got {type(declared).__name__}")
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in iso.env.items()):
        raise ContractError(f"implementation {label}: isolation env must map names to strings (or None), got {dict(iso.env)!r}")
    if iso.target is not None and not isinstance(iso.target, str):
        raise ContractError(f"implementation {label}: isolation target must be a 'module:attribute' string")
    if iso.timeout is not None and not (isinstance(iso.timeout, (int, float)) and iso.timeout > 0):
        raise ContractError(f"implementation {label}: isolation timeout must be a positive number of seconds")
    return iso


_PROXIES: "weakref.WeakValueDictionary[tuple, IsolatedImplementation]" = weakref.WeakValueDictionary()
_PROXIES_LOCK = threading.Lock()


def isolate(impl: Any, spec: str) -> Any:
    """``impl`` itself when it declares no isolation (or inside a worker), else the proxy of its
    worker, one per (target, environment)."""
    iso = isolation_of(impl, spec)
    if iso is None or _IN_WORKER:
        return impl
    target = iso.target or BUILTIN_IMPLEMENTATIONS.get(spec, spec)
    module, sep, attribute = target.rpartition(":")
    if sep and module.endswith(".py"):  # a file path: the worker resolves it from the same place
        target = f"{os.path.abspath(os.path.expanduser(module))}:{attribute}"
    key = (target, iso.env_key())
    with _PROXIES_LOCK:
        proxy = _PROXIES.get(key)
        if proxy is None or proxy.closed:
            proxy = IsolatedImplementation(target, iso, label=spec)
            _PROXIES[key] = proxy
    return proxy


# ---------------------------------------------------------------------------------------------
# The proxy


class IsolatedImplementation:
    """An implementation whose calls run in a worker process (fulfils ``conformance.contract``)."""

    def __init__(self, target: str, isolation: Isolation, label: str = ""):
        self.target = target
        self.runtime = isolation  # not called ``isolation``: the proxy itself runs in process
        self._worker = _Worker(target, isolation, label or target)
        self._finalizer = weakref.finalize(self, self._worker.close)
        info = self._worker.start()
        self.name: str = info["name"]
        self.layout: str = info["layout"]
        self.dtypes: tuple[str, ...] = info["dtypes"]
        self.dtype_notes: dict[str, str] = dict(info.get("dtype_notes") or {})
        self._not_implemented: dict[str, str] = info["not_implemented"]

    def not_implemented(self) -> dict[str, str]:
        return dict(self._not_implemented)

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> "RemoteLayer":
        with self._worker.lock:  # the generation that built it, not one a later restart makes
            handle, methods = self._worker.request("build", (layer, dict(config), tuple(tuple(s) for s in input_shapes), dtype))
            generation = self._worker.generation
        return remote_layer_class(methods)(self, handle, generation)

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when none is running)."""
        return self._worker.pid

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop the worker (it would also stop when this object is collected, or at exit)."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"<isolated implementation {getattr(self, 'name', '?')!r} ({self.target}), env {dict(self.runtime.env)}, worker pid {self.pid}>"


class RemoteLayer:
    """A layer built in a worker; its methods run there. Each built layer's class has exactly the
    public methods of the real one (``remote_layer_class``), so the checks that look for an
    optional method (``initial_weights``, ``gradients``, ``forward_training``...) find it here
    exactly where the implementation has it."""

    def __init__(self, owner: IsolatedImplementation, handle: int, generation: int):
        # Holding the proxy keeps its worker alive while a layer built there is in use, even when
        # nothing else holds it (``load_implementation("keras-jax").build(...)``).
        self._owner, self._worker, self._handle, self._generation = owner, owner._worker, handle, generation

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return self._worker.request("call", (self._handle, method, args, kwargs), generation=self._generation)

    def __del__(self) -> None:
        try:
            self._worker.release(self._handle, self._generation)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


def _remote_method(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name}`` of the layer built in the worker, run there."
    return method


_LAYER_CLASSES: dict[tuple[str, ...], type] = {}


def remote_layer_class(methods) -> type:
    """The proxy class for built layers with these public methods (one class per set)."""
    key = tuple(sorted(methods))
    cls = _LAYER_CLASSES.get(key)
    if cls is None:
        cls = type("RemoteLayer", (RemoteLayer,), {name: _remote_method(name) for name in key})
        _LAYER_CLASSES[key] = cls
    return cls


def _public_methods(obj: Any) -> list[str]:
    """The names of ``obj``'s public methods (bound methods, not callable attributes such as a model)."""
    return [name for name in dir(obj) if not name.startswith("_") and inspect.ismethod(getattr(obj, name, None))]


# ---------------------------------------------------------------------------------------------
# The parent's side of one worker


_BOOT = (
    "import json, sys\n"
    "path = json.loads(sys.argv[1])\n"
    "sys.path[:] = path + [p for p in sys.path if p and p not in path]\n"
    "from conformance.isolation import _serve\n"
    "_serve(int(sys.argv[2]))\n"
)

_WORKERS: "weakref.WeakSet[_Worker]" = weakref.WeakSet()


class _Worker:
    def __init__(self, target: str, isolation: Isolation, label: str):
        self.target, self.isolation, self.label = target, isolation, label
        self.lock = threading.RLock()
        self.proc: subprocess.Popen | None = None
        self.owner = os.getpid()
        self.generation = 0
        self.info: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_thread: threading.Thread | None = None
        self._reader_thread: threading.Thread | None = None
        self._answers: queue.Queue | None = None  # framed answers of the current worker, read by _reader_thread
        self._released: list[tuple[int, int]] = []
        self._closed = False
        self._busy = False  # a request is in flight (on the thread holding the lock)
        self._close_pending = False
        _WORKERS.add(self)

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # life cycle

    def start(self) -> dict[str, Any]:
        with self.lock:
            self._ensure_running()
            assert self.info is not None
            return self.info

    def _ensure_running(self) -> None:
        if self._closed:
            raise WorkerError(f"isolated implementation {self.label}: closed")
        if self.owner != os.getpid():  # a forked child: the parent's worker is not ours to use
            self.proc, self.owner, self._stderr_thread, self._reader_thread, self._answers = None, os.getpid(), None, None, None
        if self.proc is not None and self.proc.poll() is None:
            return
        self._spawn()
        try:
            info = self._roundtrip("load", self.target)
        except BaseException:
            self._kill()
            raise
        if self.info is not None:
            previous = {k: self.info[k] for k in ("name", "layout", "dtypes")}
            if previous != {k: info[k] for k in ("name", "layout", "dtypes")}:
                self._kill()
                raise WorkerError(f"isolated implementation {self.label}: the restarted worker declares {info} instead of {previous}")
        self.info = info

    def _spawn(self) -> None:
        env = dict(os.environ)
        for name, value in self.isolation.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        self.stderr_tail.clear()
        self.generation += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps(path), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, bufsize=0, close_fds=True,
        )
        self._stderr_thread = threading.Thread(target=self._forward_stderr, args=(self.proc,), daemon=True, name=f"attnconf-worker-stderr-{self.proc.pid}")
        self._stderr_thread.start()
        # Answers are read by a thread of their own into a queue, so that a timeout is a
        # ``queue.get(timeout=...)``: portable (select() on a pipe is POSIX only). Each worker
        # has its own queue: a killed worker's last bytes never reach the next one's caller.
        self._answers = queue.Queue()
        self._reader_thread = threading.Thread(target=_read_answers, args=(self.proc.stdout.fileno(), self._answers), daemon=True, name=f"attnconf-worker-answers-{self.proc.pid}")
        self._reader_thread.start()

    def _forward_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.stderr_tail.append(line.rstrip("\n"))
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except Exception:  # noqa: BLE001 - a closed or swapped stderr must not kill the thread
                pass

    def close(self) -> None:
        with self.lock:
            self._closed = True
            if self._busy:  # called by a finalizer in the middle of a request: after it
                self._close_pending = True
                return
            proc = self.proc
            if proc is None or self.owner != os.getpid():
                return
            if proc.poll() is None:
                try:
                    self._send(pickle.dumps(("close", None, []), protocol=PROTOCOL))
                    proc.wait(timeout=_CLOSE_WAIT_S)
                except Exception:  # noqa: BLE001 - fall through to killing it
                    pass
            self._kill()

    def _kill(self) -> None:
        proc, thread, reader = self.proc, self._stderr_thread, self._reader_thread
        self.proc, self._stderr_thread, self._reader_thread, self._answers = None, None, None, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        if reader is not None and reader is not threading.current_thread():
            # the dead worker's pipe gives the reader its end of file; joined before the pipe is
            # closed, so it never reads a descriptor a new worker's pipe has reused
            reader.join(timeout=2.0)
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        try:
            proc.stderr.close()
        except Exception:  # noqa: BLE001
            pass

    # calls

    def release(self, handle: int, generation: int) -> None:
        """Called from a built layer's ``__del__``: only queued (a finalizer may run in the
        middle of another request); sent with the next request."""
        self._released.append((generation, handle))

    def request(self, op: str, args: Any, generation: int | None = None) -> Any:
        with self.lock:
            if generation is not None and (generation != self.generation or self.proc is None or self.proc.poll() is not None):
                raise WorkerError(f"isolated implementation {self.label}: this layer was built in a worker process that has since exited; build it again")
            self._ensure_running()
            return self._roundtrip(op, args)

    def _roundtrip(self, op: str, args: Any) -> Any:
        released, self._released = self._released, []
        handles = [h for g, h in released if g == self.generation]
        try:
            payload = pickle.dumps((op, args, handles), protocol=PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - nothing was sent: the worker is still in step
            self._released.extend(released)
            raise TypeError(f"isolated implementation {self.label}: the arguments of {_describe(op)} cannot be sent to the worker: {exc}") from exc
        self._busy = True
        try:
            self._send(payload)
            status, value = self._receive(op)
        except WorkerError:
            raise
        except BaseException:
            # Interrupted mid-request (KeyboardInterrupt, an unpicklable argument after a partial
            # write...): the stream is out of step, so this worker cannot be trusted any more.
            self._kill()
            raise
        finally:
            self._busy = False
            if self._close_pending:
                self._close_pending = False
                self.close()
        if status == "ok":
            return value
        exc = rebuild_exception(value)
        raise exc.with_traceback(_remote_frame(exc, value.get("frame")))

    def _send(self, payload: bytes) -> None:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        except (BrokenPipeError, OSError, ValueError):
            raise self._died("while receiving a request") from None

    def _receive(self, op: str) -> tuple[str, Any]:
        answers = self._answers
        assert self.proc is not None and answers is not None
        timeout = None if op == "load" else self.isolation.timeout  # starting up (imports) is not timed
        try:
            data = answers.get(timeout=timeout)
        except queue.Empty:
            self._kill()
            raise WorkerError(f"isolated implementation {self.label}: no answer to {_describe(op)} within {timeout} s; the worker was killed and the next call starts a new one") from None
        if data is None:  # end of file: the worker is gone
            raise self._died(f"during {_describe(op)}")
        try:
            return _LocalUnpickler(data).load()
        except pickle.UnpicklingError as exc:
            raise WorkerError(f"isolated implementation {self.label}: the result of {op} cannot be rebuilt in this process: {exc}") from None

    def _died(self, when: str) -> WorkerError:
        proc = self.proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=_CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
            if self._stderr_thread is not None:
                self._stderr_thread.join(timeout=2.0)
        tail = "\n".join(f"  {line}" for line in list(self.stderr_tail)[-15:])
        self._kill()
        if code is None:
            status = "stopped answering"
        elif code < 0:
            try:
                status = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                status = f"was killed by signal {-code}"
        else:
            status = f"exited with status {code}"
        message = f"isolated implementation {self.label}: its worker process {status} {when}; layers built in it are lost and the next call starts a new worker"
        if tail:
            message += f"\nlast lines of the worker's stderr:\n{tail}"
        return WorkerError(message)


def _read_answers(fd: int, answers: queue.Queue) -> None:
    """A worker's answer reader (one thread per worker): each framed answer's bytes go into
    ``answers``, then None at end of file (or when the pipe is closed)."""
    try:
        while True:
            data = _read_frame(fd)
            answers.put(data)
            if data is None:
                return
    except Exception:  # noqa: BLE001 - a closed pipe ends the stream like end of file
        answers.put(None)


def _describe(op: str) -> str:
    return {"load": "loading the implementation", "build": "build()", "call": "a call on a built layer"}.get(op, op)


class _LocalUnpickler(pickle.Unpickler):
    """Rebuilds only classes of modules this process has imported already: a worker's answer
    never makes this process import a framework (or anything else)."""

    def __init__(self, data: bytes):
        import io

        super().__init__(io.BytesIO(data))

    def find_class(self, module: str, name: str) -> Any:
        if module != "builtins" and module not in sys.modules:
            raise pickle.UnpicklingError(f"it holds a {module}.{name}, and {module!r} is not imported here (return NumPy arrays and builtin types)")
        return super().find_class(module, name)


# ---------------------------------------------------------------------------------------------
# Exceptions across the process boundary


def _error_payload(exc: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    try:
        args = pickle.dumps(exc.args, protocol=PROTOCOL)
    except Exception:  # noqa: BLE001 - the message still crosses
        args = None
    return {
        "mro": [(c.__module__, c.__qualname__) for c in type(exc).__mro__ if issubclass(c, BaseException)],
        "args": args,
        "message": str(exc),
        "notes": [str(n) for n in getattr(exc, "__notes__", [])],
        "frame": (frames[-1].filename, frames[-1].lineno or 1, frames[-1].name) if frames else None,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def _local_class(module: str, qualname: str) -> type | None:
    if module == "builtins":
        owner: Any = builtins
    else:
        owner = sys.modules.get(module)
        if owner is None:
            return None
    for part in qualname.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner if isinstance(owner, type) and issubclass(owner, BaseException) else None


def rebuild_exception(payload: Mapping[str, Any]) -> BaseException:
    """The worker's exception as one of this process's: the same type where it is a builtin or
    already imported here, else the nearest such base, its message prefixed by the original type."""
    mro = payload["mro"]
    module, qualname = mro[0]
    original = qualname if module == "builtins" else f"{module}.{qualname}"
    message = payload["message"]
    exc: BaseException | None = None
    for index, (mod, name) in enumerate(mro):
        cls = _local_class(mod, name)
        if cls is None or not issubclass(cls, Exception):
            continue
        if index == 0 and payload["args"] is not None:
            try:
                exc = cls(*_LocalUnpickler(payload["args"]).load())
            except Exception:  # noqa: BLE001 - fall back to the message
                exc = None
        if exc is None:
            try:
                exc = cls(message if index == 0 else f"{original}: {message}")
            except Exception:  # noqa: BLE001 - a constructor with other arguments: try the base
                continue
        break
    if exc is None:
        exc = RuntimeError(f"{original}: {message}")
    for note in payload.get("notes") or []:
        exc.add_note(note)
    exc.__cause__ = RemoteTraceback(payload["traceback"])
    return exc


def _remote_frame(exc: BaseException, frame: tuple[str, int, str] | None):
    """A traceback whose one frame is the worker's innermost (file, line, function), so error
    reports that print the innermost frame point into the implementation, not into this proxy."""
    if not frame:
        return None
    filename, lineno, function = frame
    code = compile("\n" * (max(int(lineno), 1) - 1) + "raise __attnconf_exception__", filename, "exec")
    code = code.replace(co_name=function, co_qualname=function) if sys.version_info >= (3, 11) else code.replace(co_name=function)
    try:
        exec(code, {"__attnconf_exception__": exc})
    except BaseException as raised:  # noqa: BLE001 - it is exc
        tb = raised.__traceback__
        return tb.tb_next if tb is not None else None
    return None


# ---------------------------------------------------------------------------------------------
# The worker's side


def _read_frame(fd: int) -> bytes | None:
    """One length-prefixed message's bytes from ``fd``; None at end of file."""
    def exactly(size: int) -> bytes | None:
        chunks, left = [], size
        while left:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    header = exactly(_HEADER.size)
    if header is None:
        return None
    return exactly(_HEADER.unpack(header)[0])


def _read_message(fd: int) -> Any:
    data = _read_frame(fd)
    return None if data is None else pickle.loads(data)


def _write_message(fd: int, message: Any) -> None:
    payload = pickle.dumps(message, protocol=PROTOCOL)
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def in_worker() -> bool:
    """Whether this process is an isolated implementation's worker."""
    return _IN_WORKER


def _watch_parent(parent: int) -> None:
    """Ends the worker when its parent is gone, even in the middle of a long computation (the
    closed pipe alone would only be noticed at the next read)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _serve(parent: int | None = None) -> None:
    """The worker's loop: requests on stdin, answers on the original stdout (the worker's own
    stdout is sent to stderr, so prints cannot corrupt the stream). Ends on EOF, on "close", or
    when the parent process is gone."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="attnconf-parent-watch").start()
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    from conformance.contract import load_implementation

    impl = None
    built: dict[int, Any] = {}
    next_handle = 0
    while True:
        message = _read_message(in_fd)
        if message is None:
            return
        op, args, released = message
        for handle in released:
            built.pop(handle, None)
        if op == "close":
            return
        try:
            if op == "load":
                impl = load_implementation(args)
                value: Any = {
                    "name": str(impl.name),
                    "layout": str(impl.layout),
                    "dtypes": tuple(str(d) for d in impl.dtypes),
                    "dtype_notes": {str(k): str(v) for k, v in dict(getattr(impl, "dtype_notes", None) or {}).items()},
                    "not_implemented": {str(k): str(v) for k, v in dict(impl.not_implemented()).items()},
                }
            elif op == "build":
                layer = impl.build(*args)
                next_handle += 1
                built[next_handle] = layer
                value = (next_handle, _public_methods(layer))
                layer = None  # only ``built`` holds it, so a release frees it
            elif op == "call":
                handle, method, call_args, call_kwargs = args
                value = getattr(built[handle], method)(*call_args, **call_kwargs)
            else:
                raise ValueError(f"unknown request {op!r}")
            answer = ("ok", value)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - every failure goes back to the caller, sys.exit included
            answer = ("err", _error_payload(exc))
        try:
            _write_message(out_fd, answer)
        except OSError:  # the parent is gone
            return
        except Exception as exc:  # noqa: BLE001 - the answer cannot be pickled: say so instead
            try:
                raise TypeError(f"the result of {op} cannot be sent back to the suite: {exc}") from exc
            except TypeError as wrapped:
                _write_message(out_fd, ("err", _error_payload(wrapped)))
        finally:
            value = answer = None  # the last result is not kept alive until the next request


@atexit.register
def _close_all() -> None:
    for worker in list(_WORKERS):
        try:
            worker.close()
        except Exception:  # noqa: BLE001
            pass
