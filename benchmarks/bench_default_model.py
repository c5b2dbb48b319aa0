"""Completion latency of the embedded default model (``specgen-tiny-code``) on the CPU.

The context is a synthetic data-science notebook, linearised by the backend's own prompt builder
(FIM, since the tokenizer has the tokens) and cut to ``--context`` tokens (1,000 by default); the
model is loaded by the backend's own loader. Each run is a greedy ``generate`` of exactly
``--new-tokens`` tokens (32) after that prompt, with the KV cache, batch 1. Prints the prefill
time alone and the full completion time, p50 and p95 over ``--runs`` runs after warm-up.

    python benchmarks/bench_default_model.py [--threads 1] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import specgen_backend  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from specgen_backend.loading import load_model
from specgen_backend.models import default_model_path
from specgen_backend.prompt import build_prompt, detect_fim
from specgen_backend.protocol import Cell, CompletionContext

# Cells a data scientist might have above the cursor; repeated (with fresh names) until the
# prompt builder has more than the context budget to cut from.
_CELLS = [
    Cell("markdown", "## Load the sales data\nOne row per order; prices in euros."),
    Cell("code", "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt"),
    Cell("code", "df{i} = pd.read_csv('sales_{i}.csv', parse_dates=['date'])\ndf{i}.head()"),
    Cell("markdown", "Clean the columns and drop the test orders."),
    Cell("code", "df{i} = df{i}.rename(columns=str.lower)\ndf{i} = df{i}[df{i}['customer'] != 'test']\n"
                 "df{i}['total'] = df{i}['price'] * df{i}['quantity']"),
    Cell("code", "monthly{i} = df{i}.groupby(df{i}['date'].dt.to_period('M'))['total'].sum()\n"
                 "fig, ax = plt.subplots(figsize=(8, 4))\nmonthly{i}.plot(ax=ax)\nax.set_title('Revenue {i}')"),
    Cell("code", "def summarize(frame, column):\n    values = frame[column].dropna()\n"
                 "    return {{'mean': values.mean(), 'std': values.std(), 'n': len(values)}}\n\n"
                 "summarize(df{i}, 'total')"),
]


def notebook_context(repeats: int = 12) -> CompletionContext:
    cells = [Cell(c.cell_type, c.source.format(i=i)) for i in range(repeats) for c in _CELLS]
    cells.append(Cell("code", ""))
    return CompletionContext(prefix="top = df0.sort_values('total', ascending=False)\ntop[", suffix="",
                             cells=cells, active=len(cells) - 1)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--context", type=int, default=1000, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    path = args.model or default_model_path()
    assert path is not None, "the default model's weights are not installed (run tools/train_default_model.py)"
    loaded = load_model(str(path), device="cpu", dtype="auto")
    model, tokenizer = loaded.model, loaded.tokenizer
    fim = detect_fim(tokenizer.get_vocab())
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompt = build_prompt(notebook_context(), fim=fim, count_tokens=count, max_prompt_tokens=args.context)
    ids = tokenizer(prompt.text, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, T)

    prefill, total = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=True)
            t1 = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            t2 = time.perf_counter()
            if i >= args.warmup:
                prefill.append(t1 - t0)
                total.append(t2 - t1)
    assert out.shape[1] == ids.shape[1] + args.new_tokens
    completion = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    params = sum(p.numel() for p in model.parameters())
    print(f"model        {path} ({params / 1e6:.2f}M params, {model.dtype}, fim={fim is not None})")
    print(f"cpu          torch {torch.__version__}, {args.threads} thread(s)")
    print(f"prompt       {ids.shape[1]} tokens; {args.new_tokens} new tokens, greedy, batch 1, {args.runs} runs")
    print(f"prefill      p50 {statistics.median(prefill) * 1e3:7.1f} ms   p95 {_percentile(prefill, 0.95) * 1e3:7.1f} ms")
    print(f"completion   p50 {statistics.median(total) * 1e3:7.1f} ms   p95 {_percentile(total, 0.95) * 1e3:7.1f} ms"
          f"   ({args.new_tokens / statistics.median(total):.0f} tokens/s end to end)")
    print(f"sample       {completion!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
