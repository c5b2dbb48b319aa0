"""One decode step of the batch, with the KV cache copied at every token or written into room.

``DynamicLayer.update`` concatenates the new token's keys and values onto the cache, copying every
layer's whole cache at every step; ``kv_room.RoomyLayer`` (what the scheduler decodes with) writes
them into spare room instead. Measured side by side in one run, alternately, on the same model,
prompt and rows: ms per decode step, p50 over the repeats, and the ratio. The logits of the two
must be the same, and the script fails if they are not.

    python benchmarks/bench_decode.py [--model DIR] [--prompt-tokens 800] [--rows 3] [--steps 24] [--repeat 7]

Without ``--model`` the embedded model is used (the default of ``specgen-backend serve``). The
prompt is random token ids: the cost of a step depends on its length, not on its words.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    import specgen_backend  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

__all__ = ["main"]


def decode(model, ids, *, rows: int, steps: int, roomy: bool):
    """(ms per decode step, the logits of every step (steps, rows, V)) after prefilling ``ids``."""
    import torch

    from specgen_backend.kv import cache_kwargs, output_cache
    from specgen_backend.kv_room import with_room

    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache = output_cache(out)
        cache.batch_repeat_interleave(rows)
        mask = torch.ones(rows, ids.shape[1], dtype=torch.long)
        token = out.logits[:, -1].argmax(-1).repeat(rows)
        logits = []
        start = time.perf_counter()
        for _ in range(steps):
            if roomy:
                with_room(cache)  # as Scheduler._decode does before each step
            positions = mask.sum(dim=1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(positions)], dim=1)
            out = model(input_ids=token.view(-1, 1), attention_mask=mask, position_ids=positions,
                        use_cache=True, **cache_kwargs(model, cache))  # fmt: skip
            cache = output_cache(out)
            logits.append(out.logits[:, -1].float())
            token = logits[-1].argmax(-1)
        elapsed = time.perf_counter() - start
    return elapsed / steps * 1000, torch.stack(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model folder (default: the embedded model)")
    parser.add_argument("--prompt-tokens", type=int, default=800)
    parser.add_argument("--rows", type=int, default=3, help="candidates decoded together")
    parser.add_argument("--steps", type=int, default=24, help="tokens decoded per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each, alternating")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from specgen_backend.models import default_model_path

    path = args.model or str(default_model_path())
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(1, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    print(f"{path}; prompt {args.prompt_tokens} tokens, {args.rows} rows, {args.steps} steps, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    decode(model, ids, rows=args.rows, steps=2, roomy=True)  # warm-up: first-call allocations
    copied, roomy = [], []
    for _ in range(args.repeat):
        a, logits_a = decode(model, ids, rows=args.rows, steps=args.steps, roomy=False)
        b, logits_b = decode(model, ids, rows=args.rows, steps=args.steps, roomy=True)
        if not torch.equal(logits_a, logits_b):
            raise SystemExit(f"the logits differ (max {(logits_a - logits_b).abs().max():.3g}): RoomyLayer is wrong")
        copied.append(a)
        roomy.append(b)
    p50a, p50b = statistics.median(copied), statistics.median(roomy)
    print("| KV cache | ms per decode step (p50) | min | max |")
    print("|---|---|---|---|")
    print(f"| copied at each token (DynamicLayer) | {p50a:.1f} | {min(copied):.1f} | {max(copied):.1f} |")
    print(f"| written into room (RoomyLayer) | {p50b:.1f} | {min(roomy):.1f} | {max(roomy):.1f} |")
    print(f"\nstep time copied / room: {p50a / p50b:.2f}x; same logits in all {args.repeat} runs")


if __name__ == "__main__":
    main()
