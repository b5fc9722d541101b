"""Worker process pools that never outlive their work.

Every pool of the project (prepare's converters, the boundary metric's scorers) is a :class:`WorkerPool`,
with one behaviour:

- SIGTERM or SIGINT while a pool is open ends its workers at once and raises
  :class:`~mtl3d.errors.Terminated` in the main thread, so the caller's cleanup (temporary folders) runs
  and the command exits with 128 + the signal number;
- any error leaving the pool (a failed task, an interrupt) ends the workers without waiting for the
  queued tasks;
- a worker that died (killed for memory, crashed) is a one-line ``UserError`` naming the pool and the
  way round it (``hint``), never a hang or a ``BrokenProcessPool`` traceback.

Workers ignore SIGINT (a Ctrl-C reaches the whole process group; the parent ends them) and take SIGTERM's
default action, whatever handler the parent had when they were forked.

Every pool starts its workers the same way: from a fork server where the platform has one (POSIX), else
by spawning. Never by forking the caller: it may hold threads (torch's thread pools, CUDA, tqdm's
monitor) that a forked child could deadlock on, the reason Python 3.14 stopped forking by default. The
fork server imports the pool's ``preload`` modules once per process, so later pools start in
milliseconds instead of re-importing them in every worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from mtl3d.errors import Terminated, UserError

T = TypeVar("T")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_open_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_previous: dict[int, Any] = {}


def worker_count(workers: int | None, what: str) -> int:
    """The number of worker processes asked for: ``None`` is ``min(4, cpu_count)``, 0 is "in this process";
    a negative number is a ``UserError`` naming ``what`` (e.g. "nyud")."""
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 0:
        raise UserError(f"{what}: workers must be >= 0 (got {workers})")
    return workers


def start_method(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """The one way every pool starts its workers (module docstring); ``preload`` names the modules the
    fork server imports before it forks (those holding the work, e.g. ``"mtl3d.data.nyud"``). Once the
    fork server runs, later ``preload`` lists have no effect: workers import what they need on demand."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        return ctx
    return mp.get_context("spawn")


def _worker_init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def _on_signal(signum: int, frame: Any) -> None:
    for pool in list(_open_pools):
        pool.kill()
    raise Terminated(signum)


def _install_handlers() -> None:
    """While any pool is open, SIGTERM/SIGINT end the workers first (main thread only: Python runs
    signal handlers there, and only there can they be installed)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        _previous[sig] = signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if _open_pools or not _previous or threading.current_thread() is not threading.main_thread():
        return
    for sig, old in _previous.items():
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, old)
    _previous.clear()


class WorkerPool:
    """A ``ProcessPoolExecutor`` with the behaviour of the module docstring. ``what`` names the work in
    errors; ``hint`` is the way round a dead worker (e.g. "convert in this process with --workers 0");
    ``preload``: see :func:`start_method`."""

    def __init__(
        self,
        workers: int,
        what: str,
        hint: str,
        preload: Sequence[str] = (),
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self.what, self.hint = what, hint
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=start_method(preload),
            initializer=_worker_init,
            initargs=(initializer, initargs),
        )
        _open_pools.add(self)
        _install_handlers()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            raise RuntimeError(f"{self.what}: the worker pool is closed")
        return self._pool

    def dead(self, e: BaseException) -> UserError:
        return UserError(f"{self.what}: a worker process died ({e}); {self.hint}")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        try:
            return self._executor().submit(fn, *args)
        except BrokenProcessPool as e:
            self.kill()
            raise self.dead(e) from None

    def result(self, future: Future[T]) -> T:
        """The task's result; its exception is raised here (a dead worker as a ``UserError``)."""
        try:
            return future.result()
        except BrokenProcessPool as e:
            self.kill()
            raise self.dead(e) from None

    def map(self, fn: Callable[..., T], items: Iterable[Any], chunksize: int = 1) -> Iterator[T]:
        try:
            yield from self._executor().map(fn, items, chunksize=chunksize)
        except BrokenProcessPool as e:
            self.kill()
            raise self.dead(e) from None

    def close(self) -> None:
        """Wait for the submitted tasks, then end the workers."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._forget()

    def kill(self, wait: bool = True) -> None:
        """End the workers now (queued and running tasks are dropped); ``wait=False`` (garbage
        collection, interpreter teardown) does not wait for the pool's threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            # terminate first: shutdown alone waits for the running tasks to finish
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
            pool.shutdown(wait=wait, cancel_futures=True)
        self._forget()

    def _forget(self) -> None:
        _open_pools.discard(self)
        _restore_handlers()
