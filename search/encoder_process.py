"""Query encoding in a child process: the micro-batcher's encoder calls run where the GIL is not shared.

In ``vitrine serve`` the request threads (store calls, fusion, JSON) hold the GIL most of the time, and a forward
pass in the same process re-acquires it after every torch op: on a 2-core machine a batch that costs 25 ms of CPU
took 218 ms of wall time, and the server used about one core. `ProcessEncoder` sends each batch over a pipe to a
child process that holds its own copy of the model and answers with the float32 rows, so the model runs on
another core without waiting for the GIL (settings search.encoder_process; see docs/deployment.md).

The child is started with the "spawn" method (never ``fork``: the parent holds torch's threads), builds the
encoder by name with `embed.build_encoder` from the parent's embed settings, sets as many torch threads as the
parent has (``OMP_NUM_THREADS`` is inherited too), loads it and says who it is (name, dim, weights_id); the
parent refuses a child whose encoder differs from its own (`common.errors.EncoderMismatch`). As with every
"spawn" child, the child imports the parent's main script first (``vitrine``, pytest, a bench script): a script
that makes a `ProcessEncoder` must do so under ``if __name__ == "__main__":``.

Failures: an error the encoder raises for a batch comes back as the same exception (an `InvalidInput` for a bad
image stays one, so the batcher's one-by-one retry works). A child that dies (killed, out of memory) fails the
call in flight with `common.errors.BackendUnavailable`; the next call starts a new child, unless
``max_failures`` children died or failed to start within ``failure_window_s``: then every call raises
`BackendUnavailable` until the service is restarted. `ProcessEncoder.close` (also run at interpreter exit) stops
the child; a child whose parent died ends by itself (its pipe closes, and it checks its parent every second).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import BackendUnavailable, EncoderMismatch, InvalidInput
from common.settings import EmbedSettings
from embed.protocol import Encoder

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0
"""Longest wait for a child to build and load its encoder (a large model from a cold disk)."""
CALL_TIMEOUT_S = 120.0
"""Longest wait for one batch's vectors (settings search.encoder_timeout_s): a child that takes longer is taken
for hung, killed and replaced."""
MAX_FAILURES = 3
FAILURE_WINDOW_S = 60.0
STOP_WAIT_S = 5.0
PARENT_CHECK_S = 1.0
"""How often an idle child checks that its parent is still alive."""

_LIVE: weakref.WeakSet[ProcessEncoder] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop every child still running when the interpreter exits."""
    for encoder in list(_LIVE):
        encoder.close()


# -- the child ---------------------------------------------------------------------------------------

def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else an exception of the nearest kind that does, with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        kind = InvalidInput if isinstance(error, InvalidInput) else BackendUnavailable
        return kind(f"{type(error).__name__}: {error}")
    return error


def _child_main(conn: Connection, settings: EmbedSettings, model: str, threads: int | None, parent: int) -> None:
    """The child process: build and load the encoder, say who it is, then answer batches until told to stop,
    until its pipe closes or until its parent is gone.

    Messages in: ``("text", [str, ...])``, ``("image", [PIL image, ...])`` or None (stop). Out: first
    ``("built", name, weights_id)`` (before loading, so that the parent refuses another model at once), then
    ``("ready", name, dim, weights_id)``, or ``("error", exception, traceback)`` instead of either; then per
    batch ``("ok", rows)`` or ``("error", exception, traceback)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the parent's to handle
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from embed.registry import build_encoder

        encoder = build_encoder(settings, model)
        conn.send(("built", encoder.name, encoder.weights_id))
        encoder.load()
        conn.send(("ready", encoder.name, encoder.dim, encoder.weights_id))
    except BaseException as error:  # the parent raises it
        conn.send(("error", _portable(error), traceback.format_exc()))
        return
    while True:
        try:
            while not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent:
                    return  # orphaned: the parent died without closing the pipe
            message = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        if message is None:
            return
        kind, values = message
        try:
            out = encoder.embed_texts(values) if kind == "text" else encoder.embed_images(values)
            reply: tuple[Any, ...] = ("ok", np.ascontiguousarray(out, dtype=np.float32))
        except Exception as error:
            reply = ("error", _portable(error), traceback.format_exc())
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


# -- the parent ------------------------------------------------------------------------------------

class ProcessEncoder:
    """Runs ``embed_texts`` / ``embed_images`` of a copy of ``encoder`` in a child process (an `Embedder`).

    The child starts here and answers once its encoder is loaded. Thread-safe: calls are taken one at a time
    (the micro-batcher's worker thread is the only caller).

    Args:
        encoder: the encoder of this process; the child's must have its name, dim and weights_id.
        settings: the embed settings the child builds its encoder with (device, dtype, batch size).
        model: the name the child builds (default: ``encoder.name``, which `embed.build_encoder` understands).
        start_timeout_s: longest wait for a child to load its encoder.
        max_failures: children that may die (or fail to start) within ``failure_window_s`` before no new one
            is started.
        failure_window_s: see ``max_failures``.

    Raises:
        EncoderMismatch: the child's encoder is not ``encoder`` (name, dim or weights).
        BackendUnavailable: the child died or did not answer in time while starting.
        Exception: what building or loading the encoder raised in the child (`common.errors.ModelNotFound`,
            `common.errors.ConfigError`, ...).
    """

    def __init__(self, encoder: Encoder, settings: EmbedSettings, *, model: str | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, call_timeout_s: float = CALL_TIMEOUT_S,
                 max_failures: int = MAX_FAILURES, failure_window_s: float = FAILURE_WINDOW_S) -> None:
        self._name = encoder.name
        self._dim = encoder.dim
        self._weights_id = encoder.weights_id
        self._settings = settings
        self._model = model or encoder.name
        self._start_timeout_s = start_timeout_s
        self._call_timeout_s = call_timeout_s
        self._max_failures = max_failures
        self._failure_window_s = failure_window_s
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._closed = False
        self._starts = 0
        with self._lock:
            self._start()
        _LIVE.add(self)

    @property
    def name(self) -> str:
        """The encoder's name."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self._dim

    @property
    def weights_id(self) -> str:
        """The encoder's weights id (see `embed.protocol.Encoder.weights_id`)."""
        return self._weights_id

    @property
    def pid(self) -> int | None:
        """The running child's process id (None when none runs)."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    @property
    def starts(self) -> int:
        """Children started so far (1 + restarts)."""
        return self._starts

    def embed_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed texts in the child.

        Raises:
            BackendUnavailable: the child died, or could not be restarted, or is not restarted any more (too
                many failures), or this encoder is closed.
            Exception: what the encoder raised in the child for this batch (`InvalidInput`, ...).
        """
        return self._call("text", list(texts))

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Embed decoded images in the child; raises as `embed_texts`, and `InvalidInput` for an image whose
        pixels cannot be read here."""
        for position, image in enumerate(images):
            try:
                image.load()
            except Exception as error:
                raise InvalidInput(f"query image #{position} ({image.mode}, {image.size[0]}x{image.size[1]}) cannot "
                                   f"be read: {error}; expected a decodable image") from error
        return self._call("image", list(images))

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop the child (after the call in flight, if any); later calls raise `BackendUnavailable`.
        Idempotent."""
        self._closed = True
        with self._lock:
            self._stop(wait_s)
        _LIVE.discard(self)

    # -- inside the lock ---------------------------------------------------------------------------

    def _call(self, kind: str, values: list[Any]) -> NDArray[np.float32]:
        if not values:
            return np.zeros((0, self._dim), np.float32)
        with self._lock:
            if self._closed:
                raise BackendUnavailable(f"the encoder process of {self._name!r} is closed (the search service "
                                         "was closed); no more queries are encoded")
            if self._conn is None:
                self._restart()
            conn, process = self._conn, self._process
            assert conn is not None and process is not None
            try:
                conn.send((kind, values))
                reply = self._receive(conn, process, self._call_timeout_s)
            except _Hung as error:
                self._failed()  # killed: a hung child would hold every later batch
                raise BackendUnavailable(
                    f"the encoder process of {self._name!r} (pid {process.pid}) did not encode {len(values)} query "
                    f"{kind}s within {self._call_timeout_s:g} s (settings search.encoder_timeout_s); it was stopped "
                    "and the next query starts a new one") from error
            except (EOFError, OSError, BackendUnavailable) as error:
                code = process.exitcode
                self._failed()
                raise BackendUnavailable(
                    f"the encoder process of {self._name!r} (pid {process.pid}) died while encoding {len(values)} "
                    f"query {kind}s (exit code {code}: killed, or out of memory?); the next query starts a new "
                    "one") from error
        if reply[0] == "error":
            raise self._raised(reply)
        rows: NDArray[np.float32] = reply[1]
        return rows

    def _start(self) -> None:
        """Start a child and wait until its encoder is loaded and checked."""
        parent_end, child_end = self._context.Pipe(duplex=True)
        threads = None
        if "torch" in sys.modules:
            import torch

            threads = torch.get_num_threads()
        process = self._context.Process(target=_child_main, name=f"vitrine-encoder-{self._name}", daemon=True,
                                        args=(child_end, self._settings, self._model, threads, os.getpid()))
        process.start()
        child_end.close()  # the parent keeps only its own end: the pipe reads EOF once the child is gone
        self._starts += 1
        deadline = time.monotonic() + self._start_timeout_s
        for step in ("built", "ready"):
            try:
                reply = self._receive(parent_end, process, deadline - time.monotonic())
            except (EOFError, OSError, BackendUnavailable) as error:
                self._kill(process, parent_end)
                raise BackendUnavailable(f"the encoder process of {self._name!r} (pid {process.pid}, model "
                                         f"{self._model!r}) ended or did not answer while loading (exit code "
                                         f"{process.exitcode}): {error}") from error
            if reply[0] == "error":
                self._kill(process, parent_end)
                raise self._raised(reply)
            if step == "built":
                _, name, weights_id = reply
                self._check(process, parent_end, name, None, weights_id)
        _, name, dim, weights_id = reply
        self._check(process, parent_end, name, dim, weights_id)
        self._process, self._conn = process, parent_end
        logger.info("encoder process of %r started (pid %s)", self._name, process.pid)

    def _check(self, process: BaseProcess, conn: Connection, name: str, dim: int | None, weights_id: str) -> None:
        """Stop ``process`` and raise EncoderMismatch unless its encoder is this process's (``dim``: None before
        the child's encoder is loaded)."""
        if (name, weights_id) != (self._name, self._weights_id) or (dim is not None and dim != self._dim):
            self._kill(process, conn)
            raise EncoderMismatch(
                f"the encoder process built {self._model!r} as encoder {name!r} ("
                f"{'' if dim is None else f'dim {dim}, '}weights "
                f"{weights_id or 'pinned by name'!r}) but this process searches with {self._name!r} (dim "
                f"{self._dim}, weights {self._weights_id or 'pinned by name'!r}); the two must be the same model: "
                "check that the encoder can be built by its name with these embed settings")

    def _restart(self) -> None:
        """Start a new child after one died, unless too many died lately."""
        now = time.monotonic()
        while self._failures and now - self._failures[0] > self._failure_window_s:
            self._failures.popleft()
        if len(self._failures) >= self._max_failures:
            raise BackendUnavailable(
                f"the encoder process of {self._name!r} died or failed to start {len(self._failures)} times within "
                f"{self._failure_window_s:g} s; it is not restarted any more (see the server log for why; restart "
                "the server, or set search.encoder_process=false to encode in the server process)")
        logger.warning("restarting the encoder process of %r", self._name)
        try:
            self._start()
        except Exception as error:
            self._failed()
            raise BackendUnavailable(f"the encoder process of {self._name!r} could not be restarted "
                                     f"({type(error).__name__}: {error})") from error

    def _failed(self) -> None:
        """Count a child's death (or failed start) and drop it."""
        self._failures.append(time.monotonic())
        if self._process is not None and self._conn is not None:
            self._kill(self._process, self._conn)
        self._process = self._conn = None

    def _receive(self, conn: Connection, process: BaseProcess, timeout_s: float | None) -> tuple[Any, ...]:
        """The child's next message; BackendUnavailable when it dies (or ``timeout_s`` passes) first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not conn.poll(0.5):
            if not process.is_alive():
                if conn.poll(0):  # its last words, sent just before it ended
                    break
                raise BackendUnavailable(f"the process ended (exit code {process.exitcode})")
            if deadline is not None and time.monotonic() > deadline:
                raise _Hung(f"no answer within {timeout_s:g} s")
        reply: tuple[Any, ...] = conn.recv()
        return reply

    def _raised(self, reply: tuple[Any, ...]) -> BaseException:
        """The exception a child sent, with a note saying where it came from."""
        _, error, trace = reply
        logger.debug("the encoder process of %r raised:\n%s", self._name, trace)
        if not isinstance(error, BaseException):
            return BackendUnavailable(f"the encoder process of {self._name!r} sent {error!r} instead of an error")
        error.add_note(f"(raised in the encoder process of {self._name!r})")
        return error

    def _stop(self, wait_s: float) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None or conn is None:
            return
        with contextlib.suppress(EOFError, OSError):
            conn.send(None)
        process.join(wait_s)
        self._kill(process, conn)

    @staticmethod
    def _kill(process: BaseProcess, conn: Connection) -> None:
        """End ``process`` (politely first) and close the parent's end of its pipe."""
        conn.close()
        if process.is_alive():
            process.terminate()
            process.join(STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join(STOP_WAIT_S)


class _Hung(BackendUnavailable):
    """A child alive but silent past its deadline."""
