"""Continuous batching: one model thread decodes the rows of every running request together.

Requests join and leave the running batch between decode steps. Each step:

1. run queued control calls (adapter load/delete) — they touch the bank, so they run here;
2. admit queued requests while rows are free, one request per user in turn (a user's burst
   cannot starve another user); each (request, adapter) pair is prefilled once with batch 1
   — starting from the longest cached prefix of an earlier prompt of the same user and
   adapter (``prefix_cache.py``), so only the tokens after it run — and its KV cache repeated
   for the candidates that share it, then merged into the running cache by left-padding the
   shorter of the two (masked off by ``attention_mask``);
3. finish the rows of cancelled or expired requests;
4. sample one token for every row from its last logits, stream new text;
5. report each candidate whose row is done (``on_candidate``, once per row, as soon as it
   ends: the caller can start validating it while the others decode); answer the requests
   whose rows are all done and drop their rows (and the cache columns that only padded them);
6. run one decode forward for the remaining rows under ``bank.rows(row adapters)``, with
   explicit position ids (a row's position is its own count of real tokens).

A cancel therefore takes effect within one step. Everything here is synchronous and runs in the
scheduler's own thread; callers talk to it through ``submit`` and ``call``, and it talks back
through each job's ``emit``/``on_candidate``/``finish`` callbacks (called from the model thread).
Callers build and tokenise the prompt before submitting (``Engine.prepare`` into
``Job.prepared``): that is CPU work proportional to the notebook, and done here it would pause
every user's decoding.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .engine import Engine, _Row, _seed
from .kv import cache_kwargs, output_cache
from .prefix_cache import PrefixCache, restore
from .prompt import clean_completion
from .protocol import Candidate, Generate

__all__ = ["SchedulerConfig", "Job", "Scheduler", "Overloaded"]

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The admission queue is full."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 16  # rows decoded together in one step
    max_queue: int = 64  # requests waiting for admission before ``Overloaded``
    # Prompt KV caches kept for reuse by the next keystroke's prefill (0 turns the cache off).
    # 256 MiB holds a full 1,536-token prompt of a 0.5B model (~36 MiB in fp32) for about seven
    # users or adapters at once, and hundreds with the embedded model; on a GPU host it is device
    # memory taken from the running batch, so raise it with care.
    prefix_cache_bytes: int = 256 << 20
    prefix_cache_entries: int = 64  # prompts kept, whatever their size (each lookup scans its key's)


@dataclass(eq=False)
class Job:
    """One ``generate`` request on its way through the scheduler."""

    request: Generate
    rows: list[Optional[str]]  # bank key of each candidate row (None: base model)
    labels: list[Optional[str]]  # the adapter id each row reports back to the client
    emit: Callable[[int, str], None]  # (candidate, new text), from the model thread
    # Called exactly once, from the model thread: (candidates, None) or (None, (error_type, message)).
    finish: Callable[[Optional[list[Candidate]], Optional[tuple[str, str]]], None]
    deadline: Optional[float] = None  # time.monotonic() after which the job is answered as it stands
    # Called once per candidate, from the model thread, as soon as its row ends (before ``finish``):
    # (candidate index, the finished candidate). Not called for rows of a cancelled job.
    on_candidate: Optional[Callable[[int, Candidate], None]] = None
    # ``Engine.prepare(request)``, done by the caller outside the model thread; None: done at admission.
    prepared: Any = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    first_token: Optional[float] = None
    generator: Any = None
    states: list[_Row] = field(default_factory=list)
    steps: int = 0
    ended: dict[int, Candidate] = field(default_factory=dict)  # candidates already reported


@dataclass(eq=False)
class _BatchRow:
    job: Job
    index: int  # candidate index within the job
    adapter: Optional[str]


class Scheduler:
    """The model thread and its queues."""

    def __init__(self, engine: Engine, *, bank=None, config: SchedulerConfig = SchedulerConfig(), metrics=None):
        self.engine, self.bank, self.config, self.metrics = engine, bank, config, metrics
        self._cond = threading.Condition()
        self._queues: collections.OrderedDict[str, collections.deque[Job]] = collections.OrderedDict()
        self._queued = 0
        self._controls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._stopped = False
        # The running batch: rows, their KV cache (B rows), attention mask (B, L), logits (B, V).
        self._rows: list[_BatchRow] = []
        self._cache = None
        self._mask = None
        self._logits = None
        self.peak_rows = 0  # the most rows ever decoded in one step (tests and benchmarks read it)
        # Touched only by the model thread (in ``_prefill``).
        self.prefix_cache = PrefixCache(max_entries=config.prefix_cache_entries, max_bytes=config.prefix_cache_bytes, metrics=metrics)
        self._thread = threading.Thread(target=self._run, name="specgen-scheduler", daemon=True)
        self._thread.start()

    # -- the caller's side -----------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; raise ``Overloaded`` when the queue is full."""
        with self._cond:
            if self._queued >= self.config.max_queue:
                raise Overloaded(f"{self._queued} requests are waiting; try again")
            self._queues.setdefault(job.request.user, collections.deque()).append(job)
            self._queued += 1
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` in the model thread between two steps; its result comes back in the future."""
        future: Future = Future()
        with self._cond:
            self._controls.append((fn, future))
            self._cond.notify()
        return future

    def wake(self) -> None:
        """Make the model thread look at its jobs now (after a cancel)."""
        with self._cond:
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def batch_size(self) -> int:
        return len(self._rows)

    def running_adapters(self) -> set[str]:
        return {row.adapter for row in self._rows if row.adapter is not None}

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # -- the model thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._controls and not self._queued and not self._rows:
                    self._cond.wait()
                if self._stopped:
                    break
                controls = list(self._controls)
                self._controls.clear()
            for fn, future in controls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # handed to the caller, who reports it
                        future.set_exception(exc)
            try:
                self._step()
            except Exception as exc:
                log.exception("a decode step failed; answering every running request with an error")
                for job in {row.job for row in self._rows}:
                    self._finish(job, None, ("internal", f"generation failed: {exc!r}"))
                self._reset()
        for job in {row.job for row in self._rows}:
            self._finish(job, None, ("model_unavailable", "the backend is shutting down"))
        self._reset()
        with self._cond:
            pending = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._queued = 0
        for job in pending:
            self._finish(job, None, ("model_unavailable", "the backend is shutting down"))

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._logits = [], None, None, None
        self._observe()

    def _take(self) -> list[Job]:
        """Pop queued jobs that fit in the free rows, one per user in turn."""
        free = self.config.max_batch - len(self._rows)
        taken: list[Job] = []
        with self._cond:
            progress = True
            while progress and self._queued:
                progress = False
                for user in list(self._queues):
                    queue = self._queues[user]
                    job = queue[0]
                    # A request wider than max_batch still runs, alone, rather than wait forever.
                    too_wide = len(job.rows) > free and (self._rows or taken)
                    if not job.cancelled.is_set() and too_wide:
                        continue
                    queue.popleft()
                    self._queued -= 1
                    if not queue:
                        del self._queues[user]
                    else:
                        self._queues.move_to_end(user)  # the next turn goes to someone else
                    progress = True
                    if job.cancelled.is_set():
                        taken.append(job)  # answered without work below
                        continue
                    free -= len(job.rows)
                    taken.append(job)
                    if free <= 0:
                        break
                if free <= 0:
                    break
        return taken

    def _step(self) -> None:
        import torch

        now = time.monotonic()
        for job in self._take():
            if job.cancelled.is_set():
                self._finish(job, None, ("cancelled", "the request was cancelled"))
            elif job.deadline is not None and now > job.deadline:
                self._finish(job, None, ("overloaded", "the request's deadline passed before the model could serve it"))
            else:
                try:
                    self._admit(job)
                except Exception as exc:
                    log.exception("prefill of request %r failed", job.request.id)
                    self._finish(job, None, ("internal", f"prefill failed: {exc!r}"))
        if not self._rows:
            self._observe()
            return
        now = time.monotonic()
        jobs = list(dict.fromkeys(row.job for row in self._rows))
        for job in jobs:
            if job.cancelled.is_set():
                for state in job.states:
                    state.finish("cancelled")
        tokens = torch.zeros(len(self._rows), dtype=torch.long)
        failed: set[Job] = set()
        for job in jobs:
            live = [i for i, row in enumerate(self._rows) if row.job is job]
            if job.cancelled.is_set():
                continue
            try:
                self._sample_job(job, live, tokens, now)
            except Exception as exc:
                # One request's bad input (or a bug it reaches) is answered alone: the other rows
                # of the batch, other users' included, go on decoding.
                log.exception("sampling request %r failed; answering it alone", job.request.id)
                for state in job.states:
                    state.finish("length")  # its rows leave the batch below
                failed.add(job)
                self._finish(job, None, ("internal", f"generation of this request failed: {exc!r}"))
        for job in jobs:
            if job in failed:
                continue  # already answered
            if job.cancelled.is_set():
                self._finish(job, None, ("cancelled", "the request was cancelled"))
            elif self._report_ended(job):
                self._finish(job, self._candidates(job), None)
        keep = [i for i, row in enumerate(self._rows) if not row.job.states[row.index].done and not row.job.cancelled.is_set()]
        self._select(keep, tokens)
        if self._rows:
            self.peak_rows = max(self.peak_rows, len(self._rows))
            self._decode(tokens[keep] if len(keep) != len(tokens) else tokens)
        self._observe()

    def _sample_job(self, job: Job, live: list[int], tokens, now: float) -> None:
        """Sample the next token of ``job``'s rows (batch positions ``live``) into ``tokens``;
        update their text, stops and streams."""
        states = [job.states[self._rows[i].index] for i in live]
        sampled, logprobs = self.engine.sample_rows(job.request, states, self._logits[live], job.generator)
        job.steps += 1
        max_tokens = max(1, min(job.request.max_tokens, self.engine.config.max_new_tokens))
        for k, i in enumerate(live):
            tokens[i] = sampled[k]
            state = job.states[self._rows[i].index]
            if state.done:
                continue
            token = int(sampled[k])
            state.logprob += float(logprobs[k])
            if token in self.engine.eos_ids:
                state.finish("stop")
            else:
                state.ids.append(token)
                state.text = self.engine.row_text(state.ids)
                state.check_stop()
            if not state.done and job.steps >= max_tokens:
                state.finish("length")
            if not state.done and job.deadline is not None and now > job.deadline:
                state.finish("length")  # answered with what it has: a late completion is useless
            delta = state.streamable_delta()
            if delta:
                job.emit(self._rows[i].index, delta)
                if job.first_token is None:
                    job.first_token = time.monotonic()
                    if self.metrics is not None:
                        self.metrics.ttft.observe(job.first_token - job.submitted)
        if self.metrics is not None:
            self.metrics.tokens.inc(len(live))

    def _admit(self, job: Job) -> None:
        """Prefill ``job`` once per distinct adapter and merge its rows into the running batch."""
        import torch

        engine = self.engine
        request = job.request
        prepared = job.prepared if job.prepared is not None else engine.prepare(request)
        ids = torch.tensor(prepared.ids, dtype=torch.long)  # (T,) on the CPU: the cache's key
        job.states = [_Row(stops=prepared.prompt.stops) for _ in job.rows]
        job.generator = torch.Generator(device="cpu").manual_seed(_seed(request))
        for adapter in dict.fromkeys(job.rows):
            indices = [i for i, a in enumerate(job.rows) if a == adapter]
            cache, logits = self._prefill(request.user, adapter, ids)  # batch 1
            if len(indices) > 1:
                cache.batch_repeat_interleave(len(indices))
                logits = logits.expand(len(indices), -1)  # (k, V)
            mask = torch.ones(len(indices), len(ids), dtype=torch.long, device=engine.loaded.device)  # (k, T)
            self._merge(cache, mask, logits)
            self._rows.extend(_BatchRow(job=job, index=i, adapter=adapter) for i in indices)

    def _prefill(self, user: str, adapter: Optional[str], ids):
        """(the batch-1 KV cache of prompt ``ids``, the logits of its last position (1, V)).

        Starts from the longest prefix of ``ids`` cached for this user and adapter and runs the
        model on the rest only: at least the last token, whose logits the first sample needs.
        """
        import torch

        model, device = self.engine.loaded.model, self.engine.loaded.device
        cached = self.prefix_cache
        stamp = None if adapter is None or self.bank is None else self.bank.stamp(adapter)
        key = (user, adapter, stamp)
        entry, reuse = cached.lookup(key, ids) if cached.enabled else (None, 0)
        reuse = min(reuse, len(ids) - 1)

        def forward(reuse: int):
            rest = ids[reuse:].view(1, -1).to(device)  # (1, T - reuse)
            with torch.inference_mode(), self._rows_context([adapter]):
                if reuse == 0:
                    return model(input_ids=rest, use_cache=True)
                positions = torch.arange(reuse, len(ids), device=device).view(1, -1)  # (1, T - reuse)
                past = cache_kwargs(model, restore(entry, reuse))
                return model(input_ids=rest, position_ids=positions, use_cache=True, **past)

        try:
            out = forward(reuse)
        except Exception:
            if reuse == 0:
                raise
            # A cached entry that cannot be continued must not fail this key's every request.
            log.exception("prefill from %d cached tokens failed; dropping the entries and prefilling it all", reuse)
            cached.drop_key(lambda k: k == key)
            entry, reuse = None, 0
            out = forward(0)
        cache = output_cache(out)
        if self.metrics is not None:
            self.metrics.prefill_tokens.inc(len(ids) - reuse)
        if cached.enabled:
            cached.record(reuse)
            # Before the cache is repeated per candidate or merged: the stored tensors are its own.
            cached.store(key, ids, cache, source=entry, reused=reuse)
        return cache, out.logits[:, -1, :].float()  # (1, V)

    def _merge(self, cache, mask, logits) -> None:
        import torch
        import torch.nn.functional as F

        if self._cache is None:
            self._cache, self._mask, self._logits = cache, mask, logits
            return
        width = max(self._mask.shape[1], mask.shape[1])
        pad_old, pad_new = width - self._mask.shape[1], width - mask.shape[1]
        for old, new in zip(self._cache.layers, cache.layers):
            # keys/values are (B, H, L, D); padding goes on the left of L.
            old.keys = torch.cat([F.pad(old.keys, (0, 0, pad_old, 0)), F.pad(new.keys, (0, 0, pad_new, 0))], dim=0)
            old.values = torch.cat([F.pad(old.values, (0, 0, pad_old, 0)), F.pad(new.values, (0, 0, pad_new, 0))], dim=0)
        self._mask = torch.cat([F.pad(self._mask, (pad_old, 0)), F.pad(mask, (pad_new, 0))], dim=0)  # (B, L)
        self._logits = torch.cat([self._logits, logits], dim=0)  # (B, V)

    def _select(self, keep: list[int], tokens) -> None:
        """Keep only rows ``keep``; drop cache columns that are padding in every kept row."""
        import torch

        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask, self._logits = None, None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self._mask = self._mask.index_select(0, index)
        trim = int((self._mask.shape[1] - self._mask.sum(dim=1)).min())
        self._mask = self._mask[:, trim:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, trim:]
            layer.values = layer.values.index_select(0, index)[:, :, trim:]

    def _decode(self, tokens) -> None:
        import torch

        from .kv_room import with_room

        with_room(self._cache)  # decode into spare room, not a copy of the cache per token (kv_room.py)
        device = self.engine.loaded.device
        positions = self._mask.sum(dim=1, keepdim=True)  # (B, 1): the row's count of real tokens
        self._mask = torch.cat([self._mask, torch.ones_like(positions)], dim=1)  # (B, L + 1)
        with torch.inference_mode(), self._rows_context([row.adapter for row in self._rows]):
            out = self.engine.loaded.model(
                input_ids=tokens.view(-1, 1).to(device),
                attention_mask=self._mask,
                position_ids=positions,
                use_cache=True,
                **cache_kwargs(self.engine.loaded.model, self._cache),
            )
        self._cache = output_cache(out)
        self._logits = out.logits[:, -1, :].float()  # (B, V)

    def _rows_context(self, adapters):
        if self.bank is None or all(a is None for a in adapters):
            return contextlib.nullcontext()
        return self.bank.rows(adapters)

    def _report_ended(self, job: Job) -> bool:
        return report_ended(job)

    def _candidates(self, job: Job) -> list[Candidate]:
        return candidates_of(job)

    def _finish(self, job: Job, candidates, error) -> None:
        finish_job(job, candidates, error, self.metrics)

    def _observe(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._queued)
            self.metrics.batch_size.set(len(self._rows))


# ----------------------------------------------------------------------------------------------
# A job's answer, the same whichever scheduler ran it (this one, or engines/vllm_scheduler.py)


def report_ended(job: Job) -> bool:
    """Hand each newly ended candidate of ``job`` to ``on_candidate``; whether all have ended."""
    for i, state in enumerate(job.states):
        if state.done and i not in job.ended:
            job.ended[i] = candidate_of(job, i)
            if job.on_candidate is not None:
                try:
                    job.on_candidate(i, job.ended[i])
                except Exception:
                    log.exception("delivering candidate %d of request %r failed", i, job.request.id)
    return len(job.ended) == len(job.states)


def candidates_of(job: Job) -> list[Candidate]:
    return [job.ended[i] if i in job.ended else candidate_of(job, i) for i in range(len(job.states))]


def candidate_of(job: Job, i: int) -> Candidate:
    """Candidate ``i`` as it stands, after streaming what it still held back."""
    state = job.states[i]
    delta = state.streamable_delta()
    if delta:
        job.emit(i, delta)
    text = clean_completion(state.text, job.request.context)
    return Candidate(text=text, logprob=state.logprob, finish_reason=state.reason, adapter=job.labels[i])  # type: ignore[arg-type]


def finish_job(job: Job, candidates, error, metrics) -> None:
    """Count the answer in ``metrics`` and deliver it (a failing delivery is logged, never raised)."""
    if metrics is not None:
        metrics.latency.observe(time.monotonic() - job.submitted)
        metrics.requests.labels(outcome="result" if error is None else error[0]).inc()
    try:
        job.finish(candidates, error)
    except Exception:
        log.exception("delivering the answer to request %r failed", job.request.id)
