"""Evaluate a causal code LM the way the default model is judged: held-out loss, and the share of
one-line greedy completions that parse as Python — for the trained model and for a random-weight
model of the same shape.

The parse test, precisely:

1. From a held-out Python file take a random *single-line simple statement* (an AST statement that
   is not compound — no ``def``/``if``/``for`` … — starts and ends on the same line, is not a bare
   docstring, and is at least 8 characters long).
2. Cut that line at a random character position after its indentation such that the partial line
   does **not** parse on its own (so a completion that adds nothing cannot pass).
3. Prompt = the preceding lines of the file (left-truncated to ``--context`` tokens) + the partial
   line. In FIM mode the prompt is ``<|fim_prefix|>{that}<|fim_suffix|>{rest of line + next 10
   lines}<|fim_middle|>`` — except the rest of the line is *not* given (the model must write it).
4. Greedy decoding, at most 48 new tokens, up to the first newline (or end of text).
5. Success = the partial line + completion, stripped of its indentation, parses with
   ``ast.parse``. Exact match (the original line reproduced) is reported too.

Run on its own::

    python tools/evaluate_default_model.py [--model PATH] [--samples 150]

or to compare builds side by side on the same held-out texts and the same cut lines (a
before/after table: held-out loss on source files and on executed notebooks, in nats per token
and bits per character, and parse and exact-match rates with plain and FIM prompts)::

    python tools/evaluate_default_model.py --compare v1=PATH v2=PATH [--executed tools/runs/executed.jsonl]
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# The backend's KV-cache helper: the cache keyword of this transformers (``past_key_values`` or ``cache``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
from specgen_backend.kv import cache_kwargs, output_cache  # noqa: E402

__all__ = ["ParseSample", "ParseResult", "parse_samples", "parse_rate", "heldout_loss", "random_twin"]

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 48
SUFFIX_LINES = 10


@dataclass(frozen=True)
class ParseSample:
    prefix: str  # preceding lines + partial line
    suffix: str  # the following lines (FIM mode only), without the rest of the cut line
    partial: str  # the partial line (with indentation)
    target: str  # the original full line


@dataclass
class ParseResult:
    samples: int = 0
    parsed: int = 0
    exact: int = 0

    @property
    def parse_rate(self) -> float:
        return self.parsed / max(self.samples, 1)

    @property
    def exact_rate(self) -> float:
        return self.exact / max(self.samples, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "parse_rate": round(self.parse_rate, 4), "exact_rate": round(self.exact_rate, 4)}


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _candidate_lines(source: str) -> list[int]:
    """0-based indices of lines holding exactly one simple statement."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or hasattr(node, "body"):
            continue
        if node.lineno != node.end_lineno:
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstrings and bare constants
        line = lines[node.lineno - 1]
        stripped = line.strip()
        if len(stripped) < 8 or ";" in stripped or stripped.startswith("#"):
            continue
        segment = line.encode()[node.col_offset : node.end_col_offset].decode(errors="replace")
        if stripped != segment:
            continue  # trailing comments or a statement sharing the line
        out.append(node.lineno - 1)
    return sorted(set(out))


def parse_samples(sources: list[str], n: int, seed: int = 0) -> list[ParseSample]:
    """``n`` cut-line samples drawn from ``sources`` (held-out file texts), reproducibly."""
    rng = random.Random(seed)
    candidates: dict[int, list[int]] = {}  # file index -> candidate lines, computed on first use
    samples: list[ParseSample] = []
    attempts = 0
    while len(samples) < n and attempts < n * 20:
        attempts += 1
        k = rng.randrange(len(sources))
        if k not in candidates:
            candidates[k] = _candidate_lines(sources[k])
        if not candidates[k]:
            continue
        source = sources[k]
        idx = rng.choice(candidates[k])
        lines = source.splitlines()
        line = lines[idx]
        indent = len(line) - len(line.lstrip())
        cuts = [c for c in range(indent + 1, len(line.rstrip())) if not _parses(line[:c].strip())]
        if not cuts:
            continue
        cut = rng.choice(cuts)
        before = "\n".join(lines[:idx])
        prefix = (before + "\n" if before else "") + line[:cut]
        suffix = "\n" + "\n".join(lines[idx + 1 : idx + 1 + SUFFIX_LINES])
        samples.append(ParseSample(prefix=prefix, suffix=suffix, partial=line[:cut], target=line))
    assert samples, "no held-out file has a single-line statement to cut"
    return samples


@torch.no_grad()
def greedy_line(model, tokenizer, prompt_ids: list[int], max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Greedy decoding until the first newline or end of text; returns the text before the newline."""
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    out = model(input_ids=ids, use_cache=True)
    past = output_cache(out)
    generated: list[int] = []
    text = ""
    for _ in range(max_new_tokens):
        nxt = int(out.logits[0, -1].argmax())
        if nxt == eos:
            break
        generated.append(nxt)
        text = tokenizer.decode(generated)
        if "\n" in text:
            break
        out = model(input_ids=torch.tensor([[nxt]], device=device), use_cache=True, **cache_kwargs(model, past))
        past = output_cache(out)
    return text.split("\n", 1)[0]


def _prompt_ids(tokenizer, sample: ParseSample, *, fim: bool, context: int) -> list[int]:
    prefix_ids = tokenizer(sample.prefix, add_special_tokens=False)["input_ids"]
    if not fim:
        return prefix_ids[-context:]
    suffix_ids = tokenizer(sample.suffix, add_special_tokens=False)["input_ids"][: context // 4]
    budget = context - len(suffix_ids) - 3
    t = tokenizer.convert_tokens_to_ids
    return (
        [t("<|fim_prefix|>")]
        + prefix_ids[-budget:]
        + [t("<|fim_suffix|>")]
        + suffix_ids
        + [t("<|fim_middle|>")]
    )


def parse_rate(model, tokenizer, samples: list[ParseSample], *, fim: bool = False, context: int = 512,
               progress: bool = False) -> ParseResult:
    """Share of ``samples`` whose greedy one-line completion parses (see the module docstring)."""
    model.eval()
    result = ParseResult()
    iterator = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc=f"parse-rate ({'fim' if fim else 'causal'})", leave=False)
    for sample in iterator:
        completion = greedy_line(model, tokenizer, _prompt_ids(tokenizer, sample, fim=fim, context=context))
        line = sample.partial + completion
        result.samples += 1
        result.parsed += _parses(line.strip())
        result.exact += line.rstrip() == sample.target.rstrip()
    return result


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch_size: int = 4) -> float:
    """Mean next-token cross-entropy (nats) over ``windows`` (N, T) of held-out tokens."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = windows[i : i + batch_size].to(next(model.parameters()).device)  # (B, T)
        loss = model(input_ids=x, labels=x).loss
        n = x.numel() - len(x)
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def random_twin(model):
    """A model of the same config with freshly initialised (random) weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1234)
    twin = AutoModelForCausalLM.from_config(model.config)
    return twin.to(torch.float32).eval()


@torch.no_grad()
def bits_per_char(model, tokenizer, windows: torch.Tensor, batch_size: int = 4) -> float:
    """Held-out cross-entropy in bits per character of text: comparable across tokenizers."""
    import math

    nats = heldout_loss(model, windows, batch_size) * (windows.numel() - len(windows))
    chars = sum(len(tokenizer.decode(w[1:].tolist())) for w in windows)
    return nats / math.log(2) / max(chars, 1)


def compare(models: dict[str, Path], *, samples: int, context: int, executed: Path | None, seed: int = 0) -> dict:
    """Each model's metrics on the same held-out texts and cut lines: {name: {metric: value}}."""
    from corpus import collect_corpus
    from train_default_model import TrainConfig, heldout_windows
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = collect_corpus()
    sources = [d.text for d in corpus.heldout]
    notebooks: list[str] = []
    if executed is not None:
        from executed_corpus import load

        notebooks = [d.text for d in load(executed) if d.heldout and d.form == "causal"]
    cut_lines = parse_samples([d.text for d in corpus.heldout if d.kind == "module"], samples, seed=seed)
    cfg = TrainConfig(seed=seed)
    report = {}
    for name, path in models.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        row: dict = {}
        windows = heldout_windows(tokenizer, sources, cfg)
        row["heldout_loss"] = round(heldout_loss(model, windows), 4)
        row["heldout_bpc"] = round(bits_per_char(model, tokenizer, windows), 4)
        if notebooks:
            nb_windows = heldout_windows(tokenizer, notebooks, cfg)
            row["notebook_loss"] = round(heldout_loss(model, nb_windows), 4)
            row["notebook_bpc"] = round(bits_per_char(model, tokenizer, nb_windows), 4)
        for fim in (False, True):
            r = parse_rate(model, tokenizer, cut_lines, fim=fim, context=context, progress=True)
            row[f"parse_{'fim' if fim else 'causal'}"] = r.parse_rate
            row[f"exact_{'fim' if fim else 'causal'}"] = r.exact_rate
        row["parse_samples"] = len(cut_lines)
        log.info("%s: %s", name, row)
        report[name] = row
    return report


def compare_table(report: dict) -> str:
    """The comparison as a markdown table, one column per model."""
    names = list(report)
    labels = {
        "heldout_loss": "held-out loss, source files (nats/token)",
        "heldout_bpc": "held-out, source files (bits/char)",
        "notebook_loss": "held-out loss, executed notebooks (nats/token)",
        "notebook_bpc": "held-out, executed notebooks (bits/char)",
        "parse_causal": "one-line completions that parse, plain prompt",
        "parse_fim": "one-line completions that parse, FIM prompt",
        "exact_causal": "exact match, plain prompt",
        "exact_fim": "exact match, FIM prompt",
    }
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in labels.items():
        if not all(key in report[n] for n in names):
            continue
        cells = [f"{report[n][key]:.1%}" if key.startswith(("parse", "exact")) else f"{report[n][key]:.3f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from corpus import CorpusConfig, collect_corpus
    from transformers import AutoModelForCausalLM, AutoTokenizer

    default = Path(__file__).resolve().parents[1] / "backend/specgen_backend/models/specgen-tiny-code"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-manifest", action="store_true",
                        help="store the parse rates in the model's MANIFEST.json (evaluation.parse_rate)")
    parser.add_argument("--compare", nargs="+", metavar="NAME=FOLDER",
                        help="compare these model folders on the same held-out texts and cut lines")
    parser.add_argument("--executed", type=Path, help="with --compare: executed notebooks (JSON lines) for a "
                        "second held-out set")
    parser.add_argument("--json", type=Path, help="with --compare: write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.compare:
        models = {}
        for item in args.compare:
            name, _, folder = item.partition("=")
            models[name] = Path(folder)
        report = compare(models, samples=args.samples, context=args.context, executed=args.executed, seed=args.seed)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(compare_table(report))
        return 0

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    corpus = collect_corpus(CorpusConfig())
    heldout = [d.text for d in corpus.heldout if d.kind == "module"]
    samples = parse_samples(heldout, args.samples, seed=args.seed)
    report = {}
    for name, m in (("trained", model), ("random", random_twin(model))):
        for fim in (False, True):
            r = parse_rate(m, tokenizer, samples, fim=fim, context=args.context, progress=True)
            report[f"{name}/{'fim' if fim else 'causal'}"] = r.as_dict()
            log.info("%s %s: %s", name, "fim" if fim else "causal", r.as_dict())
    print(json.dumps(report, indent=2))
    manifest_path = args.model / "MANIFEST.json"
    if args.write_manifest and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        manifest.setdefault("evaluation", {})["parse_rate"] = report
        manifest["evaluation"]["parse_rate_command"] = " ".join(
            ["python", "tools/evaluate_default_model.py", *(argv if argv is not None else sys.argv[1:])])
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
