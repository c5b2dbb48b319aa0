"""One loaded model ready for completion: its prompt format, its end tokens, and the per-row
decoding state and sampling that the scheduler (``scheduler.py``) drives step by step."""

from __future__ import annotations

import dataclasses
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Optional

from .loading import LoadedModel, prompt_fim
from .prompt import CodeScanner, Prompt, build_prompt, find_stop, mid_line, partial_stop_length
from .prompt import MAX_CHARS_PER_TOKEN, bound_context
from .protocol import CompletionContext, Generate

__all__ = ["EngineConfig", "Engine", "Prepared"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class EngineConfig:
    max_prompt_tokens: int = 1536  # notebook context kept around the cursor
    max_new_tokens: int = 128  # hard ceiling on what a request may ask for
    max_candidates: int = 8  # hard ceiling on n
    # Give the model the text after the cursor (fill-in-the-middle) when its tokenizer has a FIM
    # format: "on"; "off": every prompt is the text before the cursor (for models whose FIM is
    # weak); "auto": on unless the model's folder advises plain prompts (loading.prompt_fim).
    fim: str = "auto"


@dataclass(frozen=True)
class Prepared:
    """A request's prompt and its token ids, ready for the model thread to prefill."""

    prompt: Prompt
    ids: list[int]
    # The request's context cut by characters to what a prompt can hold: what the model thread
    # may read of the notebook (stop rules, the text around the cursor) without rereading megabytes.
    context: CompletionContext


class Engine:
    """Generation over one loaded model."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig = EngineConfig()):
        self.loaded = loaded
        self.config = config
        tokenizer = loaded.tokenizer
        self.fim = prompt_fim(loaded.name, tokenizer, config.fim)
        self.eos_ids = _end_token_ids(loaded)
        self._tables: dict = {}  # logits width -> constraint.TokenTable (built once per model)
        self._tables_lock = threading.Lock()
        threading.Thread(target=self._build_table, name="specgen-token-table", daemon=True).start()
        # The prompt and the new tokens must fit the positions the model was trained on.
        context = getattr(loaded.model.config, "max_position_embeddings", None) or 1 << 30
        self.max_prompt_tokens = max(16, min(config.max_prompt_tokens, context - config.max_new_tokens))

    def prompt_for(self, request: Generate) -> Prompt:
        tokenizer = self.loaded.tokenizer
        return build_prompt(
            request.context,
            fim=self.fim,
            count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
            max_prompt_tokens=self.max_prompt_tokens,
            extra_stops=request.stop,
        )

    def prepare(self, request: Generate) -> Prepared:
        """Bound, build and tokenise the prompt of ``request``.

        CPU work that grows with the notebook: callers run it outside the model thread (the
        server in a worker thread) and hand the result to the scheduler in ``Job.prepared``,
        with the request's context replaced by ``Prepared.context``.
        """
        context = bound_context(request.context, self.max_prompt_tokens * MAX_CHARS_PER_TOKEN)
        prompt = self.prompt_for(dataclasses.replace(request, context=context))
        ids = self.loaded.tokenizer(prompt.text, add_special_tokens=not prompt.fim).input_ids
        return Prepared(prompt=prompt, ids=list(ids), context=context)

    # -- decoding held to the live state (constraint.py) -------------------------------------

    def token_table(self, size: int):
        """The ``TokenTable`` of this model for logits of width ``size`` (built once: started in
        the background when the engine is made, waited for here on the first step)."""
        with self._tables_lock:
            if size not in self._tables:
                from .constraint import TokenTable

                self._tables[size] = TokenTable.from_tokenizer(self.loaded.tokenizer, size, self.eos_ids)
            return self._tables[size]

    def _build_table(self) -> None:
        # A 150k vocabulary takes seconds of CPU: better while the server starts than in the
        # model thread at the first request, where it would pause every user's decoding.
        try:
            head = self.loaded.model.get_output_embeddings()
            size = getattr(head, "out_features", None) or getattr(getattr(head, "weight", None), "shape", [None])[0]
            if size:
                self.token_table(int(size))
        except Exception:
            log.exception("building the token table ahead of time failed; it is built at the first request")

    def sample_rows(self, request: Generate, states: list["_Row"], logits, generator):
        """Sample the next token of ``states`` (rows of one request) from their ``logits`` (n, V).

        Each row's logits are masked to what its constraint and the syntax rules allow (per row:
        rows of other requests in the batch are not touched), then ``_sample`` picks. Rows get
        their ``guide`` here on their first step. Returns (tokens (n,), their logprobs (n,)).
        """
        import torch

        table = self.token_table(logits.shape[-1])
        if any(state.guide is None for state in states):
            self._attach_guides(request, states, table)
        rules = [None if state.done else state.guide.rule(table) for state in states]
        if any(rule is not None for rule in rules):
            # Sparse: a rule names the few tokens it refuses or the few it keeps, so a step costs in
            # proportion to those, not to the vocabulary times the rows.
            masked = logits.clone()  # (n, V); the batch's own logits stay as the model gave them
            for k, rule in enumerate(rules):
                if rule is not None:
                    rule.apply(masked[k])
            lost = torch.isneginf(masked.max(dim=-1).values)  # (n,): a rule left the row nothing
            for k in torch.nonzero(lost).flatten().tolist():
                masked[k] = logits[k]  # then it decodes unmasked rather than not at all
            logits = masked
        tokens, logprobs = _sample(logits, request.temperature, generator)
        if request.constraint is not None:  # one row left alive is still steered (``_steer_first``)
            _spread_heads(states, logits, tokens, logprobs, table.texts)
        for state, token in zip(states, tokens.tolist()):
            if not state.done:
                state.guide.advance(table.texts[token], token in self.eos_ids)
        return tokens, logprobs

    def row_text(self, ids: list[int]) -> str:
        """The text of a row's generated ``ids`` (``constraint.decode_row``)."""
        from .constraint import decode_row

        return decode_row(self.loaded.tokenizer, next(iter(self._tables.values())).texts if self._tables else None, ids)

    def _attach_guides(self, request: Generate, states: list["_Row"], table) -> None:
        from .constraint import HeadGuide, RowGuide, open_statement, scanned_prefix

        # The active cell's text before the cursor sets the brackets and strings open at the cursor.
        prefix = scanned_prefix(request.context.prefix)
        scanner = CodeScanner()
        scanner.feed(prefix)
        statement = mid_line(request.context)
        heads = HeadGuide(request.constraint, table) if request.constraint is not None else None
        inside = open_statement(scanner, prefix)
        for state in states:
            if state.guide is None:
                state.guide = RowGuide(scanner, statement=statement, heads=heads, open_statement=inside)


@dataclass
class _Row:
    """The state of one candidate while it is being decoded."""

    stops: tuple[str, ...]
    ids: list = None  # type: ignore[assignment]
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    logprob: float = 0.0
    done: bool = False
    reason: str = "length"
    guide: Optional[Any] = None  # constraint.RowGuide: scanner and constraint, from the first step

    def __post_init__(self):
        self.ids = []

    def check_stop(self) -> None:
        cut = find_stop(self.text, self.stops)
        if self.guide is not None:
            end = self.guide.statement_end(self.text)  # mid-line: the end of the statement
            if end >= 0 and (cut < 0 or end < cut):
                cut = end
        if cut >= 0:
            self.text = self.text[:cut]
            self.finish("stop")

    def finish(self, reason: str) -> None:
        if not self.done:
            self.done, self.reason = True, reason

    def streamable_delta(self) -> str:
        """New text that can be shown: not a possible start of a stop string, nor half a
        UTF-8 character (the tokenizer decodes those as U+FFFD until the rest arrives)."""
        end = len(self.text)
        if not self.done:
            end -= partial_stop_length(self.text, self.stops)
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
        if end <= self.emitted:
            return ""
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta


# Temperatures below this sample like greedy decoding (and dividing by a denormal overflows);
# above the ceiling the distribution is flat to float precision anyway.
MIN_TEMPERATURE = 1e-4
MAX_TEMPERATURE = 100.0


def _sample(logits, temperature: float, generator):
    """Greedy when temperature is (about) 0, else softmax sampling. Returns (tokens, logprobs).

    ``logits`` (n, V) may carry the decoding masks as ``-inf``; the logprob returned is under
    that constrained distribution (log_softmax over the allowed tokens), which is what ranks the
    candidates: they were all held to the same names, and the unconstrained value would penalise
    exactly the names only the live kernel knew (absent from the prompt, so improbable to the raw
    model). Safe for any input: a NaN/denormal temperature is greedy, an infinite one is clamped,
    and a row with NaN or +inf logits is decoded greedily over its finite values; a row with no
    finite value at all raises ``ValueError`` (the scheduler then answers that request alone).
    """
    import torch

    logits = logits.float()
    top = logits.max(dim=-1).values  # (n,): NaN if the row has a NaN, +inf if it has one
    broken = torch.isnan(top) | (top == float("inf"))
    if bool(broken.any()):  # rare: sanitise only then (a full pass over (n, V) costs on big vocabularies)
        logits = logits.masked_fill(~torch.isfinite(logits), float("-inf"))
        top = logits.max(dim=-1).values
    if bool((top == float("-inf")).any()):
        raise ValueError("no token has a finite logit (every token masked out, or the model produced NaN)")
    logp = torch.log_softmax(logits, dim=-1)  # (n, V)
    greedy = logits.argmax(dim=-1)
    if not temperature >= MIN_TEMPERATURE:  # also NaN
        tokens = greedy
    else:
        t = min(float(temperature), MAX_TEMPERATURE)
        scaled = (logits - top.unsqueeze(-1)) / t  # <= 0: exp cannot overflow
        probs = torch.softmax(scaled, dim=-1).cpu()
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
        tokens = torch.where(broken, greedy, tokens)
    return tokens, logp.gather(1, tokens.view(-1, 1)).squeeze(1)


def _spread_heads(states: list["_Row"], logits, tokens, logprobs, texts: list[str]) -> None:
    """Rows of one request that stand at the same point of a head take different heads (in place).

    Candidates are worth several only if they differ where it matters: at ``weather[`` three rows
    sampled from a weak model mostly write the same column, and validation then ranks one head
    three times. Among rows with the same text so far whose required head is still open
    (``pending``: after ``df[``, ``expr.``), a row whose sampled token leads to no head the earlier
    rows have not already taken gets instead the most likely allowed token that still does (a
    token's room: the heads it can still become; ``texts`` are the tokens' texts). Greedy rows so
    become the best head, the second best, …; when the heads are fewer than the rows, rows share.
    Once their texts differ, rows decode as they will. A row's logprob stays the one under its
    own masks, so ranking compares rows as before. Where a head is optional (``undecided``: at
    ``ratio = ``) rows are not spread: a row pushed off the model's choice there writes whatever
    name is left, code that runs and means nothing.
    """
    import torch

    _steer_first(states[0], logits[0], tokens, logprobs, texts)
    groups: dict[tuple, list[int]] = {}
    for k, state in enumerate(states):
        guide = state.guide
        if not state.done and guide is not None and guide.heads is not None and guide.mode == "pending":
            groups.setdefault(tuple(state.ids), []).append(k)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        guide = states[rows[0]].guide

        def room(token: int) -> int:  # read only when rows collide: most steps never scan the heads
            piece = texts[token]
            if piece is None:  # an end token or a part of a character: no head to tell apart, never pushed
                return len(rows)
            text = guide.body + piece
            heads = (h for h, _ in guide.heads.rests if h.startswith(guide.body))
            return max(1, sum(1 for h in heads if h.startswith(text) or text.startswith(h)))

        used: dict[int, int] = {}
        for k in rows:
            token = int(tokens[k])
            if used.get(token, 0) and used[token] >= room(token):
                row = logits[k]
                finite = int(torch.isfinite(row).sum())
                for other in torch.topk(row, min(SPREAD_TOKENS, finite)).indices.tolist():
                    if texts[other] is None:  # a row is pushed to another head, never to an end
                        continue
                    if not used.get(other, 0) or used[other] < room(other):
                        tokens[k] = token = other
                        logprobs[k] = torch.log_softmax(row.float(), dim=-1)[other]
                        break
            used[token] = used.get(token, 0) + 1


SPREAD_TOKENS = 16  # most likely tokens a row looks through for a head no earlier row took
STEER_TOKENS = 4096  # most likely allowed tokens the first row looks through for a preferred head


def _steer_first(state: "_Row", row, tokens, logprobs, texts: list[str]) -> None:
    """A request's first row, while its head is pending (or, where the head is optional, before
    it has begun anything), takes the most likely allowed token on the way to a head the
    notebook's words name (``Constraint.preferred``), when the token it sampled leads to none of
    them (in place; its logprob becomes that token's).

    The weak model picks among live names almost at random, and ranking can prefer the head the
    user named only if some row wrote it: this makes one row write it. Where the head is
    optional (``sort_values(``, ``stock[``: a variable or a mask may come too) the other rows stay
    free; that one row begins the head (``'amount_sum'``) instead of the digits a weak model
    writes there. ``_spread_heads`` runs after, so the other rows spread over the heads this one
    leaves.
    """
    import torch

    guide = state.guide
    if state.done or guide is None or guide.heads is None or guide.mode not in ("pending", "undecided") \
            or not guide.heads.preferred:
        return
    if guide.heads.steered is None:
        guide.heads.steered = state  # the row steered from the first step on; once it is done, none is
    if guide.heads.steered is not state:
        return
    preferred = guide.heads.preferred
    undecided = guide.mode == "undecided"  # only spaces so far: the head begins after them

    def leads(token: int) -> bool:
        piece = texts[token]
        if piece is None:
            return False
        if undecided:
            piece = piece.lstrip(" ")
            if not piece:
                return False  # a space alone begins nothing: the row would stay undecided
        text = guide.body + piece
        return any(p.startswith(text) or text.startswith(p) for p in preferred)

    if leads(int(tokens[0])):
        return
    finite = int(torch.isfinite(row).sum())  # the tokens the row's masks allow (a pending head: few)
    for other in torch.topk(row, min(finite, STEER_TOKENS)).indices.tolist():
        if leads(other):
            tokens[0] = other
            logprobs[0] = torch.log_softmax(row.float(), dim=-1)[other]
            return


def _end_token_ids(loaded: LoadedModel) -> set[int]:
    """Token ids that end a completion: EOS and the FIM/file markers some code models emit."""
    tokenizer, config = loaded.tokenizer, loaded.model.generation_config
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    for marker in ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<EOT>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return ids


def _seed(request: Generate) -> int:
    # Reproducible for a given user and request id (str hashes are salted per process; crc32 is not).
    return zlib.crc32(f"{request.user}\0{request.id}".encode()) if request.temperature >= MIN_TEMPERATURE else 0

