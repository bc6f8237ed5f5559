"""The run itself: asyncio on a thread and loop of its own, so it works the same in a script and in a Jupyter
kernel whose loop is already running. The calling thread waits, reports progress, and turns a kernel
interrupt (KeyboardInterrupt) into a clean cancellation that keeps every record made so far."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidBenchmark
from . import _http
from .load import LoadShape, arrival_offsets
from .records import CANCELLED, ERROR, TIMEOUT, RequestRecord, Timeline, finish_record
from .target import Target
from .workloads import Workload

CANCEL_GRACE_S = 10.0  # how long the caller waits for cancelled requests to record themselves


@dataclass(frozen=True)
class BenchProgress:
    """A snapshot of a run, handed to ``on_progress`` callbacks in the calling thread.

    ``new_records`` are the requests that finished since the previous snapshot — what a live chart
    plots; ``wall_time`` (``time.time()``) puts them on the same axis as the server's own metrics.
    """

    label: str
    phase: str  # preparing | running | done
    wall_time: float
    elapsed_s: float
    total: int | None  # requests to send, warm-up included (None: the run is timed by duration)
    duration_s: float | None
    sent: int
    completed: int
    failed: int
    in_flight: int
    output_tokens: int
    new_records: tuple[RequestRecord, ...] = ()
    started_at: float | None = None  # wall-clock time of the run's t = 0

    @property
    def done(self) -> bool:
        return self.phase == "done"


ProgressCallback = Callable[[BenchProgress], None]


@dataclass
class LiveState:
    """What the loop thread writes and the calling thread reads (plain ints and an append-only list)."""

    records: list[RequestRecord] = field(default_factory=list)
    phase: str = "preparing"
    sent: int = 0
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    output_tokens: int = 0
    t0: float | None = None  # time.perf_counter() at the run's start
    started_at: float | None = None  # time.time() at the same moment
    aborted: str | None = None


class LoadRun:
    """One run of a workload against a target under a load shape (the coroutine side)."""

    def __init__(self, target: Target, workload: Workload, shape: LoadShape, *, timeout: float,
                 max_time: float | None, give_up_after: int):
        self.target, self.workload, self.shape = target, workload, shape
        self.timeout, self.max_time = timeout, max_time
        self.give_up_after = give_up_after
        self.live = LiveState()
        self._next = 0
        self._total = None if shape.requests is None else shape.requests + shape.warmup
        self._deadline: float | None = None
        self._connect_failures = 0
        self._exact = workload.exact_output and bool(target.engine.exact_output())

    # -- the whole run --------------------------------------------------------------------------
    async def main(self) -> None:
        await self._prepare()
        live = self.live
        live.t0, live.started_at, live.phase = time.perf_counter(), time.time(), "running"
        if self.shape.duration is not None:
            self._deadline = live.t0 + self.shape.duration
        load = self._open_loop() if self.shape.open_loop else self._closed_loop()
        try:
            if self.max_time is not None:
                await asyncio.wait_for(load, self.max_time)
            else:
                await load
        except asyncio.TimeoutError:
            live.aborted = f"stopped after max_time={self.max_time:g} s; unfinished requests were cancelled"
        finally:
            live.phase = "done"

    async def _prepare(self) -> None:
        try:
            await self.workload.prepare(self.target.count_tokens, self._total or 1000)
        except (OSError, _http.HTTPStatusError, ValueError, KeyError) as exc:
            raise InvalidBenchmark(
                f"Could not prepare the workload with {self.target.url} ({_describe(exc)}): is the server running, "
                "and is its API key in the server's headers()?"
            ) from exc

    def _take_index(self) -> int | None:
        """The next request's index, or None when the run should send no more."""
        if self.live.aborted or (self._total is not None and self._next >= self._total):
            return None
        if self._deadline is not None and time.perf_counter() >= self._deadline:
            return None
        index, self._next = self._next, self._next + 1
        return index

    # -- closed loop ----------------------------------------------------------------------------
    async def _closed_loop(self) -> None:
        users = [asyncio.ensure_future(self._user(u)) for u in range(self.shape.users)]
        await _gather_or_cancel(users)

    async def _user(self, user: int) -> None:
        while (index := self._take_index()) is not None:
            await self._request(index, user, scheduled=time.perf_counter())

    # -- open loop ------------------------------------------------------------------------------
    async def _open_loop(self) -> None:
        assert self.shape.rate is not None and self.live.t0 is not None
        cap = asyncio.Semaphore(self.shape.concurrency) if self.shape.concurrency else None
        pending: set[asyncio.Future[None]] = set()
        try:
            for offset in arrival_offsets(self.shape.rate, self.shape.burstiness, self.shape.seed):
                delay = self.live.t0 + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                index = self._take_index()
                if index is None:
                    break
                task = asyncio.ensure_future(self._arrival(index, self.live.t0 + offset, cap))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await _gather_or_cancel(list(pending))
        except asyncio.CancelledError:
            await _cancel_all(list(pending))
            raise

    async def _arrival(self, index: int, scheduled: float, cap: asyncio.Semaphore | None) -> None:
        if cap is None:
            await self._request(index, None, scheduled)
            return
        async with cap:
            if self.live.aborted or (self._deadline is not None and time.perf_counter() >= self._deadline):
                self._not_sent(index, scheduled)  # it waited for the cap until the run was over
                return
            await self._request(index, None, scheduled)

    def _not_sent(self, index: int, scheduled: float) -> None:
        t0 = self.live.t0 or 0.0
        record = RequestRecord(index=index, warmup=index < self.shape.warmup, scheduled_s=scheduled - t0,
                               status=CANCELLED, error="not sent: the run ended while it waited for the concurrency cap")
        self.live.records.append(record)

    # -- one request ----------------------------------------------------------------------------
    async def _request(self, index: int, user: int | None, scheduled: float) -> None:
        live, t0 = self.live, self.live.t0 or 0.0
        prompt = self.workload.prompt(index)
        record = RequestRecord(index=index, warmup=index < self.shape.warmup, user=user,
                               scheduled_s=scheduled - t0, expected_prompt_tokens=prompt.expected_prompt_tokens)
        body = self._body(prompt)
        path = self.target.api_path(self.workload.api)
        timeline = Timeline(sent=time.perf_counter())
        record.sent_s = timeline.sent - t0
        live.sent += 1
        live.in_flight += 1
        chunk_tokens = self.target.engine.chunk_tokens

        def sink(now: float, payload: bytes) -> None:
            chunk = _parse(payload)
            timeline.add(now, chunk, chunk_tokens(chunk) if isinstance(chunk, dict) else None)

        try:
            async with _deadline(self.timeout):
                end = await _http.stream(self.target.endpoint, path, body, self.target.headers, sink)
            self._connect_failures = 0
            if timeline.error:
                self._fail(record, ERROR, f"error in stream: {timeline.error}")
            else:
                finish_record(record, timeline, end)
                record.end_s = end - t0
        except asyncio.TimeoutError:
            self._fail(record, TIMEOUT, f"no complete answer within timeout={self.timeout:g} s")
        except asyncio.CancelledError:
            self._fail(record, CANCELLED, "cancelled")
            raise
        except _http.HTTPStatusError as exc:
            record.http_status = exc.status
            self._fail(record, ERROR, str(exc))
        except OSError as exc:  # refused, reset, StreamBroken (the connection ended early)
            self._fail(record, ERROR, _describe(exc))
            self._count_connect_failure(exc, timeline)
        except Exception as exc:  # noqa: BLE001 - a malformed answer fails this request, not the run
            self._fail(record, ERROR, _describe(exc))
        finally:
            if math.isnan(record.end_s):
                record.end_s = time.perf_counter() - t0
            live.in_flight -= 1
            if record.ok:
                live.completed += 1
                live.output_tokens += record.output_tokens or 0
            elif record.status != CANCELLED:
                live.failed += 1
            live.records.append(record)

    def _body(self, prompt: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.target.model, "stream": True}
        if prompt.messages is not None:
            body["messages"] = list(prompt.messages)
        else:
            body["prompt"] = prompt.text
        if prompt.max_tokens:
            body["max_tokens"] = prompt.max_tokens
        body.update(self.target.engine.body(prompt.max_tokens, self._exact and bool(prompt.max_tokens)))
        body.update(self.target.extra_body)
        body.update(prompt.extra)
        return body

    @staticmethod
    def _fail(record: RequestRecord, status: str, error: str) -> None:
        record.status, record.error = status, error

    def _count_connect_failure(self, exc: BaseException, timeline: Timeline) -> None:
        """Stop sending once ``give_up_after`` requests in a row found no server (it died or never was)."""
        if timeline.chunks or not isinstance(exc, OSError):
            return
        self._connect_failures += 1
        if self._connect_failures >= self.give_up_after and not self.live.aborted:
            self.live.aborted = (f"stopped sending after {self._connect_failures} requests in a row could not reach "
                                 f"{self.target.url} ({_describe(exc)})")


if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout  # one timer handle; wait_for would add a task per request
else:  # pragma: no cover - Python 3.10
    @contextlib.asynccontextmanager
    async def _deadline(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        timer = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            if timer.cancelled() or timer.when() > asyncio.get_running_loop().time():
                raise
            raise asyncio.TimeoutError from None
        finally:
            timer.cancel()


_raw_decode = json.JSONDecoder().raw_decode
try:  # orjson parses a chunk about 3x faster than the json module; optional (a pure-Python install still works)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _fast_loads = None


def _parse(payload: bytes) -> Any:
    """One chunk's JSON: orjson where installed, else json without its per-call encoding sniffing."""
    if _fast_loads is not None:
        try:
            return _fast_loads(payload)
        except ValueError:
            pass  # e.g. NaN, which orjson refuses and the json module reads
    try:
        return _raw_decode(payload.decode())[0]
    except ValueError:
        return json.loads(payload)


def new_loop() -> asyncio.AbstractEventLoop:
    """The load generator's event loop: uvloop's (libuv, in C) where installed, asyncio's otherwise.

    Each streamed chunk is one read callback; asyncio's pure-Python selector loop spends more CPU on it
    than parsing the chunk does. ``SERVEKIT_BENCH_LOOP=asyncio`` chooses asyncio's loop.
    """
    if os.environ.get("SERVEKIT_BENCH_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:  # not on Windows, nor in a bare install
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _http.StreamBroken) else f"{type(exc).__name__}: {text}"


async def _gather_or_cancel(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every task; if this wait is cancelled, cancel them and wait until they have recorded."""
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        await _cancel_all(tasks)
        raise


async def _cancel_all(tasks: Sequence[asyncio.Future[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the calling thread's side -------------------------------------------------------------------
class LoopThread:
    """Runs one coroutine on a new event loop in a daemon thread; cancellable from any thread."""

    def __init__(self, make_coroutine: Callable[[], Any]):
        self._make = make_coroutine
        self._loop = new_loop()
        self._task: asyncio.Task[Any] | None = None
        self._ready = threading.Event()
        self.finished = threading.Event()  # waited on, not join(): an interrupted join() can leave is_alive() wrong
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="servekit-bench", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._task = self._loop.create_task(self._make())
            self._ready.set()
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.error = exc
        finally:
            self._ready.set()
            _http.close_lingering()
            self._loop.run_until_complete(asyncio.sleep(0))  # let closed transports release their sockets
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self.finished.set()

    def cancel(self) -> None:
        if self._task is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed meanwhile: nothing left to cancel
                pass


class ProgressFeed:
    """Turns the live state into :class:`BenchProgress` snapshots for the callbacks."""

    def __init__(self, run: LoadRun, label: str, callbacks: Sequence[ProgressCallback]):
        self.run, self.label, self.callbacks = run, label, list(callbacks)
        self._seen = 0

    def emit(self) -> None:
        if not self.callbacks:
            return
        live, shape = self.run.live, self.run.shape
        records = live.records
        new = tuple(records[self._seen:len(records)])
        self._seen += len(new)
        elapsed = time.perf_counter() - live.t0 if live.t0 is not None else 0.0
        total = None if shape.requests is None else shape.requests + shape.warmup
        snapshot = BenchProgress(
            label=self.label, phase=live.phase, wall_time=time.time(), elapsed_s=elapsed, total=total,
            duration_s=shape.duration, sent=live.sent, completed=live.completed, failed=live.failed,
            in_flight=live.in_flight, output_tokens=live.output_tokens, new_records=new, started_at=live.started_at,
        )
        for callback in self.callbacks:
            callback(snapshot)


def execute(run: LoadRun, feed: ProgressFeed, interval: float) -> bool:
    """Run ``run`` on its own loop thread, feeding progress every ``interval`` s; True if interrupted.

    A KeyboardInterrupt (Ctrl-C, a kernel interrupt) cancels the run; requests in flight are recorded as
    cancelled and the caller gets everything measured so far. Errors of the run are raised here.
    """
    runner = LoopThread(run.main)
    runner.start()
    interrupted = False
    try:
        while not runner.finished.wait(interval):
            feed.emit()
    except KeyboardInterrupt:
        interrupted = True
        runner.cancel()
        runner.finished.wait(CANCEL_GRACE_S)
    run.live.phase = "done"
    feed.emit()
    if runner.error is not None:
        raise runner.error
    return interrupted
