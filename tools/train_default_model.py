"""Train jupyter-specgen's embedded default model, ``specgen-tiny-code``, from scratch.

Reproducible and offline: the corpus is the permissively licensed Python installed on this machine
(see ``corpus.py``), the tokenizer a byte-level BPE trained here, the model a small Llama. Writes
the weights (safetensors, stored fp16 — config ``dtype`` says float32 so a plain
``from_pretrained`` gives fp32 on CPU), the tokenizer, ``MANIFEST.json`` (packages, versions,
licences, training summary and evaluation), a loss log, and the loss plot.

Typical runs::

    python tools/train_default_model.py --minutes 1 --out /tmp/dry   # end-to-end smoke test
    python tools/train_default_model.py --minutes 40                 # the shipped model (CPU)

Training stops at ``--minutes`` of wall time; the learning rate follows a cosine over that time
(not over steps), so a run of any length ends annealed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CorpusConfig, Document, collect_corpus  # noqa: E402
from evaluate_default_model import heldout_loss, parse_rate, parse_samples, random_twin  # noqa: E402

log = logging.getLogger("train_default_model")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "backend/specgen_backend/models/specgen-tiny-code"
EOS = "<|endoftext|>"
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int = 8192  # byte-level BPE incl. 4 special tokens; code compresses well at 8k
    hidden_size: int = 256
    intermediate_size: int = 768  # SwiGLU, 3x hidden
    num_hidden_layers: int = 6  # layers are cheap next to the vocab projection at this size
    num_attention_heads: int = 8  # head dim 32
    num_key_value_heads: int = 4  # grouped-query attention, as in real code models
    max_position_embeddings: int = 1024  # trained at this length: a 1,000-token notebook fits


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 40.0  # wall-time budget for the optimisation loop (evaluation comes after)
    seq_len: int = 1024
    batch_size: int = 2  # 2 x 1024 tokens per step
    lr: float = 2e-3  # peak; tiny models tolerate a high rate
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    fim_rate: float = 0.5  # share of documents turned into prefix-suffix-middle examples
    max_stream_tokens: int = 12_000_000  # tokens prepared; more than a CPU run can see
    tokenizer_chars: int = 12_000_000  # characters the BPE is trained on
    eval_every_s: float = 240.0
    eval_windows: int = 48  # held-out windows of seq_len for the final held-out loss
    parse_samples: int = 150
    exec_share: float = 0.4  # share of training windows drawn from the executed notebooks (when given)
    threads: int = 1
    device: str = "cpu"  # "cuda" works the same way (not exercised on the shipped CPU build)
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        additional_special_tokens=special[1:],
        model_max_length=ModelShape.max_position_embeddings,
    )
    return fast


# ---------------------------------------------------------------------------------------------
# Data: FIM transformation and packing


def fim_examples(text: str, rng: random.Random) -> list[str]:
    """``text`` cut into windows of 200–2,400 characters, each as one PSM example.

    Half the middles end at a line end (the cursor-in-a-line case the editor produces most);
    the other half are random character spans (as in the FIM papers). A middle that ends at a
    line end leaves the newline to the suffix: in the editor the text after a cursor inside a
    line starts with that line's newline, and that is what the backend's FIM prompt holds (the
    first build put the newline in the middle, so its FIM prompts never looked like training).
    """
    out = []
    pos = 0
    while pos < len(text):
        size = rng.randint(200, 2400)
        end = text.find("\n", pos + size)
        end = len(text) if end < 0 else end + 1
        chunk = text[pos:end]
        pos = end
        if len(chunk) < 20:
            continue
        a = rng.randint(0, len(chunk) - 1)
        if rng.random() < 0.5:
            b = chunk.find("\n", a)
            b = len(chunk) if b < 0 else b
            for _ in range(rng.choice((0, 0, 1, 2))):  # sometimes a few more lines
                nb = chunk.find("\n", b + 1)
                b = len(chunk) if nb < 0 else nb
        else:
            b = min(len(chunk), a + rng.randint(1, max(1, len(chunk) // 3)))
        prefix, middle, suffix = chunk[:a], chunk[a:b], chunk[b:]
        out.append(f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}")
    return out


def token_stream(tokenizer, docs: list[Document], *, fim_rate: float, max_tokens: int, seed: int) -> np.ndarray:
    """Documents (shuffled, some FIM-transformed) tokenized and packed, ``<|endoftext|>`` between."""
    rng = random.Random(seed)
    docs = list(docs)
    rng.shuffle(docs)
    eos = tokenizer.eos_token_id
    parts: list[np.ndarray] = []
    total = 0
    batch: list[str] = []

    def flush():
        nonlocal total
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray(ids + [eos], dtype=np.uint16))
            total += len(ids) + 1
        batch.clear()

    for doc in docs:
        if fim_rate and rng.random() < fim_rate:
            batch.extend(fim_examples(doc.text, rng))
        else:
            batch.append(doc.text)
        if len(batch) >= 256:
            flush()
            if total >= max_tokens:
                break
    if batch:
        flush()
    return np.concatenate(parts)[:max_tokens]


# ---------------------------------------------------------------------------------------------
# Training


def lr_at(step: int, frac: float, cfg: TrainConfig) -> float:
    """Linear warm-up over steps, then a cosine over the *time* fraction to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def make_model(shape: ModelShape, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    )
    return LlamaForCausalLM(config)


def _windows(streams: list[tuple[np.ndarray, float]], rng: np.random.Generator, cfg: TrainConfig) -> torch.Tensor:
    """A batch of ``seq_len`` windows, each from a stream picked with that stream's weight."""
    weights = np.array([w for _, w in streams], dtype=np.float64)
    picks = rng.choice(len(streams), size=cfg.batch_size, p=weights / weights.sum())
    rows = []
    for k in picks:
        stream = streams[k][0]
        o = int(rng.integers(0, len(stream) - cfg.seq_len - 1))
        rows.append(stream[o : o + cfg.seq_len].astype(np.int64))
    return torch.from_numpy(np.stack(rows))  # (B, T)


def train(model, streams: list[tuple[np.ndarray, float]], heldout: torch.Tensor, cfg: TrainConfig,
          run_dir: Path) -> dict:
    """The optimisation loop over ``streams`` (token stream, sampling weight); returns a summary.
    Logs every step to ``run_dir/loss.csv``."""
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    budget = cfg.minutes * 60
    start = time.time()
    last_eval = start
    step = tokens = 0
    evals = []
    csv_file = open(run_dir / "loss.csv", "w", newline="")
    writer = csv.writer(csv_file)
    writer.writerow(["step", "tokens", "elapsed_s", "lr", "train_loss"])
    bar = tqdm(total=int(budget), unit="s", desc="train", mininterval=5)
    try:
        while (elapsed := time.time() - start) < budget:
            model.train()
            x = _windows(streams, rng, cfg).to(cfg.device)
            lr = lr_at(step, elapsed / budget, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += x.numel()
            writer.writerow([step, tokens, round(elapsed, 1), f"{lr:.3e}", f"{loss.item():.4f}"])
            bar.update(int(time.time() - start) - bar.n)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok=tokens, refresh=False)
            if time.time() - last_eval > cfg.eval_every_s:
                hl = heldout_loss(model, heldout[:8])
                evals.append({"step": step, "tokens": tokens, "elapsed_s": round(time.time() - start, 1), "heldout_loss": hl})
                log.info("step %d tokens %d held-out loss %.4f", step, tokens, hl)
                csv_file.flush()
                last_eval = time.time()
    finally:
        bar.close()
        csv_file.close()
    hl = heldout_loss(model, heldout[:8])
    evals.append({"step": step, "tokens": tokens, "elapsed_s": round(time.time() - start, 1), "heldout_loss": hl})
    (run_dir / "evals.json").write_text(json.dumps(evals, indent=1))
    return {"steps": step, "tokens_seen": tokens, "train_seconds": round(time.time() - start, 1), "evals": evals}


def plot_loss(run_dir: Path, evals: list[dict], random_loss: float, path: Path, before: dict | None = None) -> None:
    """The run's training and held-out loss over tokens seen; ``before``, the manifest of the
    build this run continued from, puts that build's held-out curve first and this run after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(run_dir / "loss.csv")))
    offset = (before or {}).get("training", {}).get("tokens_seen", 0)
    tokens = (offset + np.array([int(r["tokens"]) for r in rows])) / 1e6
    loss = np.array([float(r["train_loss"]) for r in rows])
    k = max(1, len(loss) // 100)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, loss, color="tab:blue", alpha=0.25, lw=0.8, label="train (per step)")
    ax.plot(tokens[k - 1 :], smooth, color="tab:blue", label=f"train ({k}-step mean)")
    if before:
        earlier = before["training"]["evals"]
        ax.plot([e["tokens"] / 1e6 for e in earlier], [e["heldout_loss"] for e in earlier], "o-", color="tab:gray",
                label="held-out, first build (from random weights)")
        ax.axvline(offset / 1e6, color="gray", ls=":", lw=1)
    ax.plot([(offset + e["tokens"]) / 1e6 for e in evals], [e["heldout_loss"] for e in evals], "o-",
            color="tab:orange", label="held-out" + (", this build (continued)" if before else ""))
    ax.axhline(random_loss, color="gray", ls="--", lw=1, label=f"random weights ({random_loss:.2f})")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("specgen-tiny-code: CPU training" + (" (continued from the first build)" if before else ""))
    ax.set_ylim(0, max(10.0, random_loss + 0.5))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_model(model, tokenizer, out: Path) -> None:
    """Weights fp16 on disk (half the bytes); ``dtype: float32`` in config.json so that a plain
    ``from_pretrained`` upcasts on load — fp16 matmuls on CPU are slow or missing."""
    out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    device = next(model.parameters()).device
    model.to("cpu", torch.float16).save_pretrained(out)
    model.to(device, torch.float32)
    tokenizer.save_pretrained(out)
    cfg_path = out / "config.json"
    config = json.loads(cfg_path.read_text())
    config["dtype"] = "float32"
    cfg_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def heldout_windows(tokenizer, texts: list[str], cfg: TrainConfig) -> torch.Tensor:
    """Up to ``eval_windows`` windows (N, seq_len) of ``texts`` packed in their order (no FIM):
    the same texts give the same windows for any model with this tokenizer."""
    docs = [Document(t, "", "heldout") for t in texts]
    held = token_stream(tokenizer, docs, fim_rate=0.0, max_tokens=cfg.eval_windows * cfg.seq_len, seed=cfg.seed)
    return torch.from_numpy(held[: len(held) // cfg.seq_len * cfg.seq_len].astype(np.int64)).view(-1, cfg.seq_len)


def load_executed(path: Path):
    from executed_corpus import load

    return load(path)


def _previous_build(folder: Path) -> dict:
    """What the model a run continues from was: its own training summary, for the manifest."""
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    training = manifest.get("training", {})
    return {"tokens_seen": training.get("tokens_seen"), "train_seconds": training.get("train_seconds"),
            "heldout_loss": manifest.get("evaluation", {}).get("heldout_loss"), "command": manifest.get("command")}


def serving_advice(parse: dict) -> dict:
    """How the backend prompts this build under ``--fim auto`` (``loading.prompt_fim`` reads it):
    with FIM only when its FIM one-line completions parse at least as often as its plain ones."""
    fim, plain = parse["trained/fim"]["parse_rate"], parse["trained/causal"]["parse_rate"]
    return {"fim": fim >= plain,
            "why": f"one-line completions that parse: {fim:.1%} from a FIM prompt, {plain:.1%} from a plain one"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=TrainConfig.minutes, help="training wall time")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch CPU threads")
    parser.add_argument("--device", default=TrainConfig.device, help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the model is written")
    parser.add_argument("--run-dir", type=Path, default=Path(__file__).parent / "runs" / "latest")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/default_model_loss.png")
    parser.add_argument("--parse-samples", type=int, default=TrainConfig.parse_samples)
    parser.add_argument("--small-data", action="store_true", help="a small corpus (for the dry run)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    parser.add_argument("--init-from", type=Path,
                        help="continue training this model folder (its tokenizer and weights) instead of starting "
                             "from random weights with a new tokenizer")
    parser.add_argument("--executed", type=Path,
                        help="execution-grounded notebooks (tools/executed_corpus.py's JSON lines) to train on "
                             "besides the source corpus")
    args = parser.parse_args(argv)

    cfg = TrainConfig(minutes=args.minutes, threads=args.threads, device=args.device, parse_samples=args.parse_samples,
                      seed=args.seed, lr=args.lr)
    shape = ModelShape()
    if args.small_data:
        cfg = TrainConfig(**{**asdict(cfg), "max_stream_tokens": 300_000, "tokenizer_chars": 1_000_000,
                             "eval_windows": 4, "eval_every_s": 20.0})
    args.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.run_dir / "train.log", mode="w")],
    )
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    t0 = time.time()

    corpus_cfg = CorpusConfig(seed=cfg.seed)
    corpus = collect_corpus(corpus_cfg)
    log.info("corpus: %d train docs (%d chars), %d held-out docs from %d sources",
             len(corpus.train), sum(len(d.text) for d in corpus.train), len(corpus.heldout), len(corpus.sources))

    if args.init_from:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
        n = json.loads((args.init_from / "MANIFEST.json").read_text())["tokenizer"]["trained_on_chars"]
        log.info("continuing %s: its tokenizer (%d tokens) and weights", args.init_from, len(tokenizer))
    else:
        rng = random.Random(cfg.seed)
        sample = rng.sample(corpus.train, len(corpus.train))
        tok_texts, n = [], 0
        for d in sample:
            tok_texts.append(d.text)
            n += len(d.text)
            if n >= cfg.tokenizer_chars:
                break
        tokenizer = build_tokenizer(tok_texts, shape.vocab_size)
        log.info("tokenizer: %d tokens (%.0fs)", len(tokenizer), time.time() - t0)

    stream = token_stream(tokenizer, corpus.train, fim_rate=cfg.fim_rate, max_tokens=cfg.max_stream_tokens, seed=cfg.seed)
    heldout = heldout_windows(tokenizer, [d.text for d in corpus.heldout], cfg)
    streams = [(stream, 1.0)]
    executed_summary = None
    notebook_heldout = None
    if args.executed:
        executed = load_executed(args.executed)
        train_docs = [Document(d.text, d.origin, d.form) for d in executed if not d.heldout]
        exec_stream = token_stream(tokenizer, train_docs, fim_rate=0.0, max_tokens=cfg.max_stream_tokens, seed=cfg.seed)
        streams = [(stream, 1 - cfg.exec_share), (exec_stream, cfg.exec_share)]
        # Held out: the causal form only (a FIM document's loss mixes in the suffix it was given).
        notebook_heldout = heldout_windows(tokenizer, [d.text for d in executed if d.heldout and d.form == "causal"], cfg)
        executed_summary = json.loads(args.executed.with_suffix(".summary.json").read_text()) | {
            "train_documents": len(train_docs), "packed_tokens_prepared": int(len(exec_stream)),
            "share_of_training_windows": cfg.exec_share}
        log.info("executed notebooks: %d train documents, %d tokens; %d held-out windows", len(train_docs),
                 len(exec_stream), len(notebook_heldout))
    train_chars = sum(len(d.text) for d in corpus.train)
    log.info("stream: %d train tokens, %d held-out windows (%.0fs)", len(stream), len(heldout), time.time() - t0)

    if args.init_from:
        model = AutoModelForCausalLM.from_pretrained(args.init_from, dtype=torch.float32).to(cfg.device)
    else:
        model = make_model(shape, tokenizer).to(cfg.device)
    shape = ModelShape(**{k: getattr(model.config, k) for k in asdict(shape) if k != "vocab_size"},
                       vocab_size=len(tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters; training for %.1f min on %d thread(s)", n_params / 1e6, cfg.minutes, cfg.threads)
    summary = train(model, streams, heldout, cfg, args.run_dir)

    log.info("evaluating")
    final_loss = heldout_loss(model, heldout)
    twin = random_twin(model).to(cfg.device)
    random_loss = heldout_loss(twin, heldout)
    samples = parse_samples([d.text for d in corpus.heldout if d.kind == "module"], cfg.parse_samples, seed=cfg.seed)
    parse = {}
    for name, m in (("trained", model), ("random", twin)):
        for fim in (False, True):
            r = parse_rate(m, tokenizer, samples, fim=fim, context=512, progress=True)
            parse[f"{name}/{'fim' if fim else 'causal'}"] = r.as_dict()
            log.info("parse-rate %s %s: %s", name, "fim" if fim else "causal", r.as_dict())
    log.info("held-out loss: trained %.4f, random %.4f", final_loss, random_loss)
    notebook_loss = heldout_loss(model, notebook_heldout) if notebook_heldout is not None and len(notebook_heldout) else None

    save_model(model, tokenizer, args.out)
    before = json.loads((args.init_from / "MANIFEST.json").read_text()) if args.init_from else None
    plot_loss(args.run_dir, summary["evals"], random_loss, args.plot, before=before)
    import tokenizers
    import transformers

    manifest = {
        "name": "specgen-tiny-code",
        "description": "jupyter-specgen's embedded offline default: a small Llama-architecture code LM "
                       "trained from scratch by tools/train_default_model.py on permissively licensed "
                       "Python source installed on the build machine.",
        "license_note": "Trained on the sources listed below, each under the licence its metadata "
                        "declares; weights are distributed with jupyter-specgen (BSD-3-Clause).",
        "architecture": "LlamaForCausalLM",
        "shape": asdict(shape) | {"vocab_size": len(tokenizer), "parameters": n_params},
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": len(tokenizer),
                      "special_tokens": [EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE], "trained_on_chars": n},
        "weights_dtype_on_disk": "float16",
        "corpus": {
            "sources": [asdict(s) for s in corpus.sources],
            "train_documents": len(corpus.train),
            "train_chars": train_chars,
            "heldout_documents": len(corpus.heldout),
            "heldout_rule": f"files whose sha1('<package>/<path>') falls in the first {corpus_cfg.heldout_fraction:.0%}",
            "notebook_style": "modules cut into cells at top-level statements and docstring >>> examples "
                              "as code cells, separated by '\\n\\n# In[ ]:\\n'",
            "fim_rate": cfg.fim_rate,
            "packed_tokens_prepared": int(len(stream)),
            "executed_notebooks": executed_summary,
        },
        "training": {
            "device": cfg.device, "threads": cfg.threads, "config": asdict(cfg),
            "initialised_from": None if args.init_from is None else _previous_build(args.init_from),
            "steps": summary["steps"], "tokens_seen": summary["tokens_seen"],
            "train_seconds": summary["train_seconds"], "evals": summary["evals"],
        },
        "evaluation": {
            "heldout_loss": round(final_loss, 4),
            "heldout_loss_random_weights": round(random_loss, 4),
            "heldout_loss_executed_notebooks": None if notebook_loss is None else round(notebook_loss, 4),
            "heldout_tokens": int(heldout.numel()),
            "parse_rate": parse,
            "parse_rate_definition": "see tools/evaluate_default_model.py (one-line greedy completion of a "
                                     "cut single-line statement; the partial line alone never parses)",
        },
        "serving": serving_advice(parse),
        "software": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "command": " ".join(["python", "tools/train_default_model.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s (%.0f s total)", args.out, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
