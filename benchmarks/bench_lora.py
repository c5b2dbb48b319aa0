"""Step time of a batch where every row has its own LoRA adapter, as a ratio to the base model.

Side by side in one run on one device, for each (phase, batch, adapter mix, rank):

- base   the model without adapters (= 1.00)
- peft   PEFT's mixed batch: ``PeftModel(..., adapter_names=[one per row])``
- torch  our bank with the torch gather+bmm path (``SPECGEN_LORA_BACKEND=torch``)
- ours   our bank on its default path: Triton kernels on CUDA; on CPU this *is* the torch path
- floor  1 + n_distinct · adapter_bytes / base_bytes: the ratio if a step only had to read the
         base weights once and each distinct adapter once (decode is memory-bound)
- GB/s   (base_bytes + n_distinct · adapter_bytes) / ours' step time

``--kind flora`` times fLoRA adapters (``W0 ∘ (1 + s·A Bᵀ)``, our own format) instead; PEFT has no
fLoRA, so its column is "-" there.

Adapters target every linear layer of the blocks (q, k, v, o, gate, up, down). Decode times one
step of B rows × 1 token over a ``--context``-token KV cache; prefill one pass of B × ``--prefill``.

    python benchmarks/bench_lora.py                      # CPU, small model, a few minutes
    python benchmarks/bench_lora.py --device cuda --hidden 2048 --intermediate 5632 --layers 16 \\
        --heads 16 --kv-heads 4 --dtype bfloat16 --prefill 256 --context 512
    python benchmarks/bench_lora.py --kind flora --ranks 1,2,4,8 --mixes distinct --phases decode --batches 64
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from specgen_backend.kv import cache_kwargs  # noqa: E402
from specgen_backend.lora import AdapterBank, AdapterBankConfig  # noqa: E402
from specgen_backend.lora.ops import ENV_VAR, resolve_backend  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ("peft", "torch", "ours")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--ranks", default="8,16,64")
    p.add_argument("--phases", default="decode,prefill")
    p.add_argument("--mixes", default="identical,sqrt,distinct", help="adapters per batch: one, √batch, one per row")
    p.add_argument("--kind", choices=("lora", "flora"), default="lora", help="PEFT LoRA adapters, or our fLoRA")
    p.add_argument("--prefill", type=int, default=16, help="tokens per row in a prefill step")
    p.add_argument("--context", type=int, default=32, help="KV-cache length behind a decode step")
    p.add_argument(
        "--min-time", type=float, default=0.05, help="seconds of timed steps per method and cell (at least 5 rounds)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return p.parse_args()


def build_model(args, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(4096, args.context + args.prefill + 8),
    )  # fmt: skip
    return LlamaForCausalLM(config).to(dtype=dtype, device=args.device).eval()


def write_adapter(folder: Path, model, rank: int, seed: int) -> int:
    """A PEFT LoRA folder with random weights on every TARGET; returns its bytes in the model dtype."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors, nbytes = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS:
            k, n = module.in_features, module.out_features
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, k, generator=g) / k**0.5
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(n, rank, generator=g) / rank**0.5
            nbytes += rank * (k + n) * module.weight.element_size()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": TARGETS, "bias": "none",
              "task_type": "CAUSAL_LM", "lora_dropout": 0.0, "base_model_name_or_path": None}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return nbytes


def write_flora_adapter(folder: Path, model, rank: int, seed: int, _layers: dict = {}) -> int:
    """An fLoRA folder (``specgen_backend.lora.flora``) with random weights on every TARGET; its bytes."""
    from specgen_backend.lora import flora

    config = flora.FLoRAConfig(r=rank, alpha=rank, target_modules=tuple(TARGETS))
    if rank not in _layers:  # one wrapped copy of the model per rank, re-filled for each adapter
        _layers[rank] = flora.add_flora(copy.deepcopy(model).float().cpu(), config)
    layers = _layers[rank]
    g = torch.Generator().manual_seed(seed)
    nbytes = 0
    with torch.no_grad():
        for layer in layers.values():
            # Small multiplicative deltas, as a trained fLoRA adapter has (W0 ∘ (1 + s·A Bᵀ) stays near W0).
            layer.flora_in.copy_(0.1 * torch.randn(layer.flora_in.shape, generator=g))
            layer.flora_out.copy_(0.1 * torch.randn(layer.flora_out.shape, generator=g))
            nbytes += (layer.flora_in.numel() + layer.flora_out.numel()) * model.dtype.itemsize
    flora.save_flora(layers, folder, config)
    return nbytes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fns: dict[str, object], device: str, min_time: float) -> dict[str, float]:
    """Fastest seconds of one call of each fn, calls interleaved round-robin.

    Interleaving makes the ratios fair on a machine whose load drifts (a shared CI box): every
    method sees the same background noise; the minimum, not the median, is kept because noise
    only ever adds time (as ``timeit`` advises).
    """
    for fn in fns.values():
        for _ in range(2):  # warm-up: allocator, Triton compilation, lazy bank metadata
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    rounds = 0
    while rounds < 5 or sum(sum(t) for t in times.values()) < min_time * len(fns):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
        rounds += 1
        if rounds >= 200:
            break
    return {name: min(t) for name, t in times.items()}


def rows_for(batch: int, mix: str) -> list[int]:
    """Adapter index of each row: one adapter, √batch adapters, or one per row."""
    n = {"identical": 1, "sqrt": max(1, round(math.sqrt(batch))), "distinct": batch}[mix]
    return [i % n for i in range(batch)]


def main() -> None:
    args = parse_args()
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    )
    batches = [int(b) for b in args.batches.split(",")]
    ranks = [int(r) for r in args.ranks.split(",")]
    phases = args.phases.split(",")
    n_adapters = max(batches)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)

    from peft import PeftModel
    from transformers import DynamicCache

    base = build_model(args, dtype)
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    ours = copy.deepcopy(base)
    bank = AdapterBank.attach(ours, AdapterBankConfig(max_adapters=n_adapters, max_rank=max(ranks)))
    ours_backend = resolve_backend("auto", torch.device(args.device))

    tmp = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    adapter_bytes, peft_model = {}, None
    for rank in ranks:
        for i in range(n_adapters):
            name = f"r{rank}-{i}"
            if args.kind == "flora":
                adapter_bytes[rank] = write_flora_adapter(tmp / name, base, rank, seed=1000 * rank + i)
                continue
            adapter_bytes[rank] = write_adapter(tmp / name, base, rank, seed=1000 * rank + i)
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp / name), adapter_name=name)
            else:
                peft_model.load_adapter(str(tmp / name), adapter_name=name)
    if peft_model is not None:
        peft_model = peft_model.to(dtype=dtype, device=args.device).eval()

    print(f"# kind={args.kind} device={args.device} dtype={str(dtype).removeprefix('torch.')} ours={ours_backend} "
          f"base={base_bytes / 2**20:.1f} MiB hidden={args.hidden} layers={args.layers} "
          f"prefill={args.prefill} context={args.context}")  # fmt: skip
    header = f"{'phase':<8}{'batch':>6}{'mix':>10}{'n':>4}{'rank':>6}{'base ms':>10}{'base':>7}" + "".join(
        f"{c:>8}" for c in ("peft", "torch", "ours", "floor", "GB/s")
    )
    print(header)
    print("-" * len(header))
    records = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for phase in phases:
            for batch in batches:
                tokens = 1 if phase == "decode" else args.prefill
                ids = torch.randint(0, args.vocab, (batch, tokens), generator=g).to(args.device)
                cache = None
                if phase == "decode":
                    ctx = torch.randint(0, args.vocab, (batch, args.context), generator=g).to(args.device)
                    cache = DynamicCache()
                    base(input_ids=ctx, **cache_kwargs(base, cache))

                def step(model, **extra):
                    def run():
                        out = model(input_ids=ids, use_cache=cache is not None, **cache_kwargs(model, cache), **extra)
                        if cache is not None:  # keep the cache at --context tokens for the next call
                            cache.crop(-1)
                        return out

                    return run

                def forced(fn, backend):
                    def run():
                        os.environ[ENV_VAR] = backend
                        try:
                            return fn()
                        finally:
                            os.environ.pop(ENV_VAR, None)

                    return run

                for mix in args.mixes.split(","):
                    for rank in ranks:
                        slots = rows_for(batch, mix)
                        names = [f"r{rank}-{s}" for s in slots]
                        needed = sorted(set(names))
                        with bank.rows([a for a in needed if a in bank.loaded()]):  # pinned: not evicted below
                            for name in needed:
                                if name not in bank.loaded():
                                    bank.load(name, tmp / name)
                        with bank.rows(names):
                            fns = {"base": step(base), "torch": forced(step(ours), "torch"), "ours": step(ours)}
                            if peft_model is not None:
                                fns["peft"] = step(peft_model, adapter_names=names)
                            times = timed(fns, args.device, args.min_time)
                        t_base = times["base"]
                        n = len(set(slots))
                        floor = 1 + n * adapter_bytes[rank] / base_bytes
                        gbps = (base_bytes + n * adapter_bytes[rank]) / times["ours"] / 1e9
                        rec = dict(kind=args.kind, phase=phase, batch=batch, mix=mix, n_distinct=n, rank=rank,
                                   base_ms=t_base * 1e3, **{m: times[m] / t_base if m in times else None for m in METHODS},
                                   floor=floor, gbps=gbps)  # fmt: skip
                        records.append(rec)
                        peft = f"{rec['peft']:>8.2f}" if rec["peft"] is not None else f"{'-':>8}"
                        print(f"{phase:<8}{batch:>6}{mix:>10}{n:>4}{rank:>6}{t_base * 1e3:>10.2f}{1.0:>7.2f}"
                              f"{peft}{rec['torch']:>8.2f}{rec['ours']:>8.2f}{floor:>8.3f}{gbps:>8.2f}",
                              flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
