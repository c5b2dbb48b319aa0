"""The scheduler's interface over a vLLM server: each job becomes streamed ``/v1/completions``
requests, one per distinct adapter among its rows (``n`` = that adapter's rows), and vLLM's own
engine batches, caches and schedules them.

What stays here: the prompt (built and tokenised by the server with ``Engine.prepare``; vLLM gets
the token ids, so both engines see the very same prompt), the stop rules of the cell and of the
statement at the cursor (the same ``_Row`` the native engine uses, fed text instead of tokens; the
cell's stops also go to vLLM, which then stops without a round trip), streaming, candidate ends,
deadlines and metrics. A cancel, a deadline or a job whose rows have all stopped closes the
stream, and vLLM aborts the request.

One thread per stream, blocked on its socket; one monitor thread that closes the streams of
cancelled and expired jobs; one control thread for ``call`` (adapter loads, which are HTTP calls
to vLLM). Callbacks (``emit``, ``on_candidate``, ``finish``) come from the stream threads.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from ..engine import MIN_TEMPERATURE, Engine, _Row, _seed
from ..constraint import scanned_prefix
from ..prompt import CodeScanner, mid_line
from ..protocol import Candidate
from ..scheduler import Job, Overloaded, SchedulerConfig, candidates_of, finish_job, report_ended
from .vllm_bank import VllmBank
from .vllm_client import SYNTAX_ARG, CompletionStream, VllmRefused, VllmServer, VllmUnavailable
from .vllm_structured import constraint_regex

__all__ = ["VllmScheduler"]

log = logging.getLogger(__name__)


class _Live:
    """A job being served: its streams and what its rows have produced."""

    def __init__(self, job: Job):
        self.job = job
        self.streams: list[CompletionStream] = []
        self.lock = threading.Lock()  # its rows are written by one thread per stream
        self.started = False  # a first chunk came back: no longer counted as queued


class VllmScheduler:
    """Drop-in for ``Scheduler`` when generation runs in a vLLM server."""

    def __init__(self, engine: Engine, *, bank: VllmBank, config: SchedulerConfig = SchedulerConfig(), metrics=None,
                 server: Optional[VllmServer] = None):  # fmt: skip
        # The bank knows the vLLM servers (``bank.clients``) and which one serves each user.
        self.engine, self.bank, self.config, self.metrics = engine, bank, config, metrics
        self.server = server  # the vLLM process this backend started (None: the operator runs it)
        self._restarting = False
        self._cond = threading.Condition()
        self._live: dict[int, _Live] = {}
        self._stopped = False
        self.peak_rows = 0
        self._controls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specgen-vllm-control")
        self._monitor = threading.Thread(target=self._watch, name="specgen-vllm-monitor", daemon=True)
        self._monitor.start()

    # -- the caller's side (as Scheduler) --------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopped:
                raise Overloaded("the backend is shutting down")
            if self._queued_locked() >= self.config.max_queue:
                raise Overloaded(f"{self._queued_locked()} requests are waiting for vLLM; try again")
            live = _Live(job)
            self._live[id(job)] = live
        threading.Thread(target=self._serve, args=(live,), name="specgen-vllm-job", daemon=True).start()
        self._observe()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` in the control thread (adapter loads and deletes, one at a time)."""
        return self._controls.submit(fn)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def device(self) -> str:
        """What the status shows as the device: the vLLM server generating."""
        return "vllm at " + ", ".join(client.url for client in self.bank.clients)

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return self._queued_locked()

    @property
    def batch_size(self) -> int:
        with self._cond:
            return sum(len(live.job.rows) for live in self._live.values() if live.started)

    def running_adapters(self) -> set[str]:
        with self._cond:
            return {a for live in self._live.values() for a in live.job.rows if a is not None}

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            lives = list(self._live.values())
            self._cond.notify_all()
        for live in lives:
            live.job.cancelled.set()
            self._close(live)
        end = time.monotonic() + 10
        while time.monotonic() < end and self._live:
            time.sleep(0.05)
        self._controls.shutdown(wait=False, cancel_futures=True)
        if self.server is not None:
            self.server.stop()

    def _queued_locked(self) -> int:
        return sum(1 for live in self._live.values() if not live.started)

    # -- serving one job -------------------------------------------------------------------

    def _serve(self, live: _Live) -> None:
        job = live.job
        error: Optional[tuple[str, str]] = None
        try:
            if job.cancelled.is_set():
                error = ("cancelled", "the request was cancelled")
            elif job.deadline is not None and time.monotonic() > job.deadline:
                error = ("overloaded", "the request's deadline passed before the model could serve it")
            else:
                error = self._generate(live)
        except Exception as exc:
            log.exception("request %r failed in the vLLM engine", job.request.id)
            error = ("internal", f"generation failed: {exc!r}")
        finally:
            with self._cond:
                self._live.pop(id(job), None)
        if error is None and job.cancelled.is_set():
            error = ("cancelled", "the request was cancelled")
        if error is None:
            self._finish(job, self._candidates(job), None)
        else:
            self._finish(job, None, error)
        self._observe()

    def _generate(self, live: _Live) -> Optional[tuple[str, str]]:
        """Stream every row of ``live``'s job; the error to answer it with, or None."""
        job = live.job
        request, prepared = job.request, job.prepared if job.prepared is not None else self.engine.prepare(job.request)
        job.states = [_Row(stops=prepared.prompt.stops) for _ in job.rows]
        self._attach_guides(job)
        groups: dict[Optional[str], list[int]] = {}
        for i, adapter in enumerate(job.rows):
            groups.setdefault(adapter, []).append(i)
        failures: list[BaseException] = []
        home = self.bank.home(request.user)  # the replica that serves this user (``VllmBank.home``)
        for attempt in range(2):
            try:
                self.bank.refresh(home)
            except VllmUnavailable as exc:
                return ("model_unavailable", f"{exc}; the backend retries at the next request once vLLM is back")
            failures.clear()
            threads = [threading.Thread(target=self._stream_group, args=(live, prepared, adapter, rows, failures),
                                        name="specgen-vllm-stream", daemon=True)
                       for adapter, rows in groups.items()]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if not failures:
                return None
            unknown = [f for f in failures if isinstance(f, VllmRefused) and f.status == 404]
            if attempt == 0 and unknown and not any(s.text for s in job.states):
                # vLLM restarted and forgot the adapters: register them again and try once more.
                self.bank.mark_stale(home)
                continue
            break
        failure = failures[0]
        if isinstance(failure, VllmUnavailable):
            self.bank.mark_stale(home)
            return ("model_unavailable", f"{failure}; the backend retries at the next request once vLLM is back")
        if isinstance(failure, VllmRefused):
            kind = "internal" if failure.status >= 500 else "bad_request"
            return (kind, f"vLLM refused the request: {failure.message}")
        return ("internal", f"generation failed: {failure!r}")

    def _body(self, request, prepared, adapter: Optional[str], n: int) -> dict:
        greedy = not request.temperature >= MIN_TEMPERATURE
        body = {
            "model": self.bank.model_for(adapter),
            "prompt": list(prepared.ids),  # token ids: the very prompt the native engine would prefill
            "n": n,
            "max_tokens": max(1, min(request.max_tokens, self.engine.config.max_new_tokens)),
            "temperature": 0.0 if greedy else float(request.temperature),
            "stream": True,
            "logprobs": 0,  # the sampled token's logprob, for ranking
            "stop": [s for s in prepared.prompt.stops if s],
            # The stop string stays in the text: ``_Row.check_stop`` cuts it exactly as the native
            # engine does (a cell separator also takes the ``#`` before it).
            "include_stop_str_in_output": True,
            "stop_token_ids": sorted(self.engine.eos_ids),
            "skip_special_tokens": True,
        }
        if not greedy:
            body["seed"] = _seed(request)
        # The native engine's syntax masks, applied in vLLM by ``vllm_syntax`` (a vLLM started
        # without that processor ignores the argument).
        body["vllm_xargs"] = {SYNTAX_ARG: scanned_prefix(request.context.prefix)}
        if request.constraint is not None:
            regex = constraint_regex(request.constraint)
            if regex is not None:
                body["structured_outputs"] = {"regex": regex}
        return body

    def _stream_group(self, live: _Live, prepared, adapter: Optional[str], rows: list[int], failures: list) -> None:
        """Stream the rows ``rows`` of the job (all with ``adapter``) as one vLLM request."""
        job = live.job
        greedy = not job.request.temperature >= MIN_TEMPERATURE
        # Greedy rows of one adapter are all the same: ask for one and copy it (what the native
        # engine computes for each, at 1/n of the cost).
        n = 1 if greedy else len(rows)
        try:
            client = self.bank.client_for(job.request.user)  # the user's home replica
            stream = client.stream("/v1/completions", self._body(job.request, prepared, adapter, n))
        except BaseException as exc:
            failures.append(exc)
            return
        with live.lock:
            live.streams.append(stream)
        with self._cond:
            if job.cancelled.is_set() or self._stopped:
                stream.close()
        try:
            for chunk in stream:
                if job.cancelled.is_set():
                    break  # the monitor closes the stream too; a chunk read after a cancel also does
                self._take(live, rows, greedy, chunk)
                if all(job.states[i].done for i in rows):
                    break  # stopped here (a statement's end) before vLLM did: abort the rest
        except BaseException as exc:
            if not job.cancelled.is_set() and not all(job.states[i].done for i in rows):
                failures.append(exc)
        finally:
            stream.close()
        with live.lock:
            for i in rows:
                job.states[i].finish("length")  # a row vLLM ended without a reason (deadline)
            self._report_ended(job)

    def _take(self, live: _Live, rows: list[int], greedy: bool, chunk: dict) -> None:
        job = live.job
        if not live.started:
            with self._cond:
                live.started = True
        with live.lock:
            for choice in chunk.get("choices", ()):
                targets = rows if greedy else [rows[int(choice.get("index", 0))]]
                text = choice.get("text") or ""
                logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
                reason = choice.get("finish_reason")
                for i in targets:
                    state = job.states[i]
                    if state.done:
                        continue
                    state.text += text
                    state.logprob += float(sum(lp for lp in logprobs if lp is not None))
                    state.check_stop()
                    if reason in ("stop", "length") and not state.done:
                        state.finish(reason)
                    elif reason is not None and not state.done:
                        state.finish("stop")
                    if not state.done and job.deadline is not None and time.monotonic() > job.deadline:
                        state.finish("length")  # answered with what it has: a late completion is useless
                    delta = state.streamable_delta()
                    if delta:
                        job.emit(i, delta)
                        if job.first_token is None:
                            job.first_token = time.monotonic()
                            if self.metrics is not None:
                                self.metrics.ttft.observe(job.first_token - job.submitted)
                if self.metrics is not None and logprobs:
                    self.metrics.tokens.inc(len(logprobs) * len(targets))
            self._report_ended(job)
        with self._cond:
            rows_now = sum(len(lv.job.rows) for lv in self._live.values() if lv.started)
            self.peak_rows = max(self.peak_rows, rows_now)

    def _attach_guides(self, job: Job) -> None:
        """The native engine's statement-end rule (stop at the end of the statement mid-line)."""
        from ..constraint import RowGuide

        prefix = scanned_prefix(job.request.context.prefix)
        scanner = CodeScanner()
        scanner.feed(prefix)
        statement = mid_line(job.request.context)
        for state in job.states:
            state.guide = RowGuide(scanner, statement=statement, heads=None)

    # -- answers (as Scheduler) ------------------------------------------------------------

    def _report_ended(self, job: Job) -> None:
        if not job.cancelled.is_set():  # a cancelled job's candidates are not handed over one by one
            report_ended(job)

    def _candidates(self, job: Job) -> list[Candidate]:
        return candidates_of(job)

    def _finish(self, job: Job, candidates, error) -> None:
        finish_job(job, candidates, error, self.metrics)

    # -- the monitor -----------------------------------------------------------------------

    def _watch(self) -> None:
        """Close the streams of cancelled and expired jobs (woken by ``wake``, else every 50 ms)."""
        while True:
            with self._cond:
                if self._stopped and not self._live:
                    return
                self._cond.wait(timeout=0.05)
                lives = list(self._live.values())
            if self.server is not None and not self.server.alive and not self._restarting and not self._stopped:
                self._restarting = True
                threading.Thread(target=self._restart, name="specgen-vllm-restart", daemon=True).start()
            now = time.monotonic()
            for live in lives:
                job = live.job
                if job.cancelled.is_set():
                    self._close(live)
                elif job.deadline is not None and now > job.deadline and live.streams:
                    with live.lock:
                        for state in job.states:
                            state.finish("length")
                    self._close(live)

    def _restart(self) -> None:
        """Start the vLLM process this backend owns again after it died; requests meanwhile get
        ``model_unavailable``, and the adapters are registered again at the next one."""
        from .vllm_setup import START_TIMEOUT_S

        log.error("the vLLM server (pid %s) exited with status %s; starting it again",
                  self.server.process.pid, self.server.process.returncode)  # fmt: skip
        self.bank.mark_stale()
        try:
            self.server.start()
            self.server.wait_ready(START_TIMEOUT_S)
            log.info("the vLLM server is back")
        except Exception:
            log.exception("restarting the vLLM server failed; trying again")
            time.sleep(5.0)
        finally:
            self._restarting = False

    def _close(self, live: _Live) -> None:
        with live.lock:
            streams = list(live.streams)
        for stream in streams:
            stream.close()

    def _observe(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.queue_depth)
            self.metrics.batch_size.set(self.batch_size)
