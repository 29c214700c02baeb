"""A :class:`~ingest.index.base.VectorIndex` run in a process of its own.

Why: qdrant_edge builds each point with PyO3 conversions that give up the GIL ~94 times
(docs/scaling.md, "GPU ingestion"), so a writer thread in the process that feeds a GPU loses the
GIL to that busy thread at every release and writes ~100× slower than alone. In a process of its
own, the shard's points are built beside nothing: the ingest pipeline's writer thread only
pickles its points and waits on a pipe, which releases the GIL.

Every call is forwarded in order over one pipe and answered before the next is sent, so the
index behaves exactly as the one it wraps (tests/test_process_index.py); an exception raised in
the child is raised again here, with the child's traceback as its cause. The child owns the
data directory's lock for as long as it runs. It closes the index (flushing its shards) and exits
when :meth:`close` is called, or when the connection ends: this process died, or a call was cut
short (Ctrl-C). If this interpreter exits without :meth:`close`, multiprocessing terminates the
(daemonic) child, and the engine's write-ahead log keeps what was written.

Example::

    index = ProcessIndex(functools.partial(EdgeIndex, Path("data"), tuning))
    index.upsert("docs", points)   # built and written in the child
    index.close()
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from ..names import DEFAULT_TENANT
from .base import DocState, Hit, IndexPoint, IndexProblem, Manifest, SearchQuery, VectorIndex

_ENTER_BULK = "_enter_bulk"
_EXIT_BULK = "_exit_bulk"


class IndexProcessGone(IndexProblem):
    """The process serving the index exited, or a call to it was cut short (Ctrl-C)."""


class _RemoteTraceback(Exception):
    """The child's traceback, attached as the cause of the exception raised again here."""

    def __str__(self) -> str:
        return str(self.args[0])


class ProcessIndex:
    """The index ``open_index()`` returns, opened and served in a spawned child process.

    ``open_index`` must be picklable (a module-level function or a ``functools.partial`` of
    one): the child calls it once. Calls may come from several threads; they are served one at
    a time. A call cut short (an exception between sending it and reading its answer, such as
    Ctrl-C) ends the connection: the child then closes the index in order and exits.
    """

    def __init__(self, open_index: Callable[[], VectorIndex]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(open_index, child), name="grounded-index", daemon=True
        )
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._process.start()
        except BaseException:
            self._conn.close()
            raise
        finally:
            child.close()
        try:
            with self._lock:
                self._answer()  # the child's index is open, or why not is raised here
        except BaseException:
            self._end(5)
            raise

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise IndexProcessGone("the index process is closed")
            # Pickled first: an argument that does not pickle fails here, with nothing sent.
            call = pickle.dumps((name, args), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._conn.send_bytes(call)
            except (BrokenPipeError, ConnectionResetError):
                self._gone()
            except BaseException:  # cut short mid-send: the child would read half a call
                self._end(5)
                raise
            return self._answer()

    def _answer(self) -> Any:
        """The answer to the call just sent; the caller holds the lock."""
        try:
            ok, value, remote = self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._gone()
        except BaseException:
            # Cut short (Ctrl-C): the answer would be read by the next call. End it here.
            self._end(5)
            raise
        if not ok:
            raise value from _RemoteTraceback(remote)
        return value

    def _gone(self) -> NoReturn:
        self._end(5)
        raise IndexProcessGone(f"the index process exited (exit code {self._process.exitcode})")

    def _end(self, wait: float) -> None:
        """Close the connection (the child reads EOF, closes the index and exits); wait."""
        self._closed = True
        self._conn.close()
        self._process.join(wait)

    # VectorIndex -------------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        return self._call("list_collections")

    def manifest(self, collection: str) -> Manifest | None:
        return self._call("manifest", collection)

    def create_collection(self, collection: str, manifest: Manifest) -> None:
        self._call("create_collection", collection, manifest)

    def drop_collection(self, collection: str) -> None:
        self._call("drop_collection", collection)

    def upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
        self._call("upsert", collection, list(points))

    def delete_documents(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> None:
        self._call("delete_documents", collection, list(doc_ids), tenant)

    def delete_stale_chunks(
        self, collection: str, current: Mapping[str, str], tenant: str = DEFAULT_TENANT
    ) -> None:
        self._call("delete_stale_chunks", collection, dict(current), tenant)

    def document_states(
        self, collection: str, doc_ids: Sequence[str], tenant: str = DEFAULT_TENANT
    ) -> dict[str, DocState]:
        return self._call("document_states", collection, list(doc_ids), tenant)

    def document_sources(self, collection: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        return self._call("document_sources", collection, tenant)

    def count(self, collection: str, tenant: str | None = None) -> int:
        return self._call("count", collection, tenant)

    def search(self, collection: str, query: SearchQuery) -> list[Hit]:
        return self._call("search", collection, query)

    def point_ids(self, collection: str) -> list[str]:
        return self._call("point_ids", collection)

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._call("payloads", collection, list(ids))

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        self._call("delete_points", collection, list(ids))

    def set_tenant(self, collection: str, ids: Sequence[str], tenant: str) -> None:
        self._call("set_tenant", collection, list(ids), tenant)

    def scroll_points(
        self, collection: str, offset: str | None = None, limit: int = 256
    ) -> tuple[list[IndexPoint], str | None]:
        return self._call("scroll_points", collection, offset, limit)

    @contextmanager
    def bulk_load(self, collection: str) -> Iterator[None]:
        self._call(_ENTER_BULK, collection)
        try:
            yield
        finally:
            self._call(_EXIT_BULK, collection)

    def flush(self, collection: str) -> None:
        self._call("flush", collection)

    def close(self) -> None:
        if self._closed:
            self._process.join(60)  # a child ending after a cut-short call: let it close
            return
        try:
            self._call("close")
        finally:
            # Closing flushes every shard and may build an HNSW graph: give it time.
            self._end(120)


def _serve(open_index: Callable[[], VectorIndex], conn: Connection) -> None:
    """The child: open the index, answer calls until ``close`` or until the parent is gone."""
    # Ctrl-C reaches the whole process group: the parent handles it and closes us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        index = open_index()
    except Exception as exc:
        _reply(conn, False, exc)
        return
    _reply(conn, True, None)
    bulk: dict[str, list[AbstractContextManager[None]]] = {}

    def shut() -> None:
        try:
            for loads in bulk.values():
                while loads:
                    loads.pop().__exit__(None, None, None)
        finally:
            bulk.clear()
            index.close()

    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            # The parent went away, or cut a call short: keep what was written.
            shut()
            return
        try:
            if name == "close":
                shut()
                value = None
            elif name == _ENTER_BULK:
                load = index.bulk_load(args[0])
                load.__enter__()
                bulk.setdefault(args[0], []).append(load)
                value = None
            elif name == _EXIT_BULK:
                bulk[args[0]].pop().__exit__(None, None, None)
                value = None
            else:
                value = getattr(index, name)(*args)
        except Exception as exc:
            _reply(conn, False, exc)
        else:
            _reply(conn, True, value)
        if name == "close":
            return


def _reply(conn: Connection, ok: bool, value: Any) -> None:
    """Send an answer: ``(True, value, "")`` or ``(False, exception, its traceback)``. An answer
    that cannot be pickled is sent as the error it raises."""
    remote = "" if ok else "".join(traceback.format_exception(value))
    try:
        conn.send((ok, _portable(value) if not ok else value, remote))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone; the receive loop reads EOF next
    except Exception as exc:  # the value did not pickle
        conn.send((False, RuntimeError(f"the index's answer could not be sent: {exc}"), remote))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling whole, else an exception of the nearest kind that does:
    the parent raises it again, so a user still reads the child's message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:
        pass
    kind = IndexProblem if isinstance(exc, IndexProblem) else RuntimeError
    return kind(str(exc))
