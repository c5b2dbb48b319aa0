"""What decoding held to the live state costs per step, on a 150k-token byte-level vocabulary.

Measured side by side in one run: one sampling step of a batch of rows with no masks (the plain
``_sample``), and the same step with every row masked as the engine masks it (half the rows
spelling a head among a few hundred names, half free under the syntax rules). Also the one-off
cost of building the token table. The vocabulary is made on the spot (Qwen2.5-size, byte-level
pieces drawn from the standard library's words, numbers and punctuation) because no tokenizer can
be downloaded here; the masks depend only on the token texts.

    python benchmarks/bench_constraint.py [--vocab 151646] [--rows 16] [--steps 50]
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import time

log = logging.getLogger(__name__)

__all__ = ["synthetic_tokenizer", "main"]


def synthetic_tokenizer(size: int, seed: int = 0):
    """A byte-level BPE tokenizer (GPT-2 alphabet, Ġ for a space) with ``size`` pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from specgen_backend.constraint import _bytes_to_unicode
    from specgen_backend.tiny import python_corpus

    to_alphabet = _bytes_to_unicode()

    def piece(text: str) -> str:
        return "".join(to_alphabet[b] for b in text.encode("utf-8"))

    rng = random.Random(seed)
    words = sorted({w for text in python_corpus(200) for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]{1,3}", text)})
    pieces: dict[str, int] = {}
    for b in range(256):
        pieces.setdefault(to_alphabet[b], len(pieces))
    candidates = words + [" " + w for w in words] + ["\n" + " " * k for k in range(16)] + [str(i) for i in range(10000)]
    for text in candidates:
        if len(pieces) >= size - 1:
            break
        pieces.setdefault(piece(text), len(pieces))
    while len(pieces) < size - 1:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randrange(2, 9)))
        pieces.setdefault(piece(rng.choice(["", " "]) + word), len(pieces))
    pieces["<|endoftext|>"] = len(pieces)
    backend = Tokenizer(models.BPE(vocab=pieces, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def main() -> None:
    import torch

    from specgen_backend.constraint import HeadGuide, RowGuide, TokenTable
    from specgen_backend.engine import _sample
    from specgen_backend.prompt import CodeScanner
    from specgen_backend.protocol import Constraint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=151646)  # Qwen2.5-Coder's tokenizer size
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--names", type=int, default=300, help="heads of the constrained rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    tokenizer = synthetic_tokenizer(args.vocab)
    start = time.perf_counter()
    table = TokenTable.from_tokenizer(tokenizer, len(tokenizer), {tokenizer.eos_token_id})
    build_s = time.perf_counter() - start

    rng = random.Random(1)
    words = sorted({t.strip() for t in table.texts if t and t.strip().isidentifier()})
    names = rng.sample(words, min(args.names, len(words)))
    heads = HeadGuide(Constraint(kind="name", names=names, required=False), table)
    prefixes = ["total = f(a, [1, ", "x = df.groupby(", "y = 0.5", "print(", "s = 'abc", "z = a ==", "for i in range(", "w = {"]
    gen = torch.Generator().manual_seed(0)

    def rows():
        out = []
        for i in range(args.rows):
            scanner = CodeScanner()
            scanner.feed(prefixes[i % len(prefixes)])
            out.append(RowGuide(scanner, statement=True, heads=heads if i % 2 == 0 else None))
        return out

    logits = torch.randn(args.rows, table.size)  # (B, V)

    def plain_step():
        _sample(logits, 0.8, gen)

    guides = rows()

    def masked_step():
        masked = logits.clone()  # as Engine.sample_rows does
        for k, g in enumerate(guides):
            rule = g.rule(table)
            if rule is not None:
                rule.apply(masked[k])
        tokens, _ = _sample(masked, 0.8, gen)
        for g, t in zip(guides, tokens.tolist()):
            g.advance(table.texts[t], t == tokenizer.eos_token_id)
            g.statement_end(g.fed + (table.texts[t] or ""))

    # Alternated step by step, so that a change in the machine's load hits both alike.
    plain_step()
    masked_step()  # warm: the first rules of each state are built and cached
    plain = masked = 0.0
    for _ in range(args.steps):
        begin = time.perf_counter()
        plain_step()
        middle = time.perf_counter()
        masked_step()
        plain, masked = plain + middle - begin, masked + time.perf_counter() - middle
    plain, masked = plain / args.steps, masked / args.steps
    log.info("vocabulary %d tokens, %d rows (%d constrained to %d names), %d steps", table.size, args.rows, (args.rows + 1) // 2, len(names), args.steps)
    log.info("token table build: %.2f s (once per model)", build_s)
    log.info("sampling step, no masks:        %7.2f ms", plain * 1e3)
    log.info("sampling step, masks per row:   %7.2f ms  (%.2fx; +%.2f ms per step, %.3f ms per row)", masked * 1e3, masked / plain, (masked - plain) * 1e3, (masked - plain) * 1e3 / args.rows)
    log.info("rows constrained %d, released %d", table.stats["constrained"], table.stats["released"])


if __name__ == "__main__":
    main()
