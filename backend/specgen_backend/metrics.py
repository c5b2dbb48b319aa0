"""Prometheus metrics of one backend (its own registry, so several backends in one process — the
tests — do not share counters). Served as text at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

# Keystroke-level latency: most answers should land well under a second.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("specgen_queue_depth", "Requests waiting for admission", registry=r)
        self.batch_size = Gauge("specgen_batch_rows", "Rows in the running batch", registry=r)
        self.adapters_resident = Gauge("specgen_adapters_resident", "Adapters loaded in the bank", registry=r)
        self.tokens = Counter("specgen_generated_tokens", "Tokens sampled (rate() gives tokens/s)", registry=r)
        self.requests = Counter("specgen_requests", "Requests answered, by outcome", ["outcome"], registry=r)
        self.ttft = Histogram("specgen_time_to_first_token_seconds", "Submission to first streamed text", buckets=_BUCKETS, registry=r)
        self.latency = Histogram("specgen_request_seconds", "Submission to final answer", buckets=_BUCKETS, registry=r)
        self.connections = Gauge("specgen_connections", "Open client connections", registry=r)
        # Prefix cache (prefix_cache.py): how much of each prompt the previous ones saved.
        self.prefix_hits = Counter("specgen_prefix_cache_hits", "Prefills that started from a cached prompt prefix", registry=r)
        self.prefix_misses = Counter("specgen_prefix_cache_misses", "Prefills that found no cached prefix", registry=r)
        self.prefix_reused_tokens = Counter("specgen_prefix_cache_reused_tokens", "Prompt tokens taken from the cache instead of prefilled", registry=r)
        self.prefill_tokens = Counter("specgen_prefill_tokens", "Prompt tokens run through the model by prefills", registry=r)
        self.prefix_entries = Gauge("specgen_prefix_cache_entries", "Prompts held by the prefix cache", registry=r)
        self.prefix_bytes = Gauge("specgen_prefix_cache_bytes", "Bytes of keys and values held by the prefix cache", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
