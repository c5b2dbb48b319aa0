"""How candidates and their rungs go to the kernel: never more in one request than it forks."""

from __future__ import annotations

import asyncio

from specgen_backend.protocol import Candidate

from jupyter_specgen.completions.validation import Validation
from jupyter_specgen.kernel.messages import MAX_VALIDATE_CANDIDATES, Verdict


def test_a_big_batch_goes_as_requests_the_kernel_can_fork_whole():
    """Twelve junk candidates submitted in one turn, each with rungs: every request holds at most
    MAX_VALIDATE_CANDIDATES texts, every text gets a verdict, none is shown unvalidated."""
    sizes: list[int] = []
    sent: list = []

    async def run(texts):
        sizes.append(len(texts))
        return [Verdict(index=i, status="ran") for i in range(len(texts))]

    async def main():
        validation = Validation(request_id=1, prefix="x = df.", suffix="", run=run, not_run_reason="", send=sent.append)
        for i in range(12):
            validation.submit(i, Candidate(text=f"f{i}(a{i}, 0.0.0.{i}", logprob=-1.0, finish_reason="length"))
        return await validation.finish()

    entries = asyncio.run(main())
    assert sizes and max(sizes) <= MAX_VALIDATE_CANDIDATES and sum(sizes) > MAX_VALIDATE_CANDIDATES, sizes
    assert all(e.verdict is not None and e.verdict.status == "ran" for e in entries)
    shown = [f.item for f in sent if getattr(f, "type", "") == "shown"]
    assert len(shown) == 12 and {s.verdict for s in shown} == {"ran"}
    assert all("0.0.0" not in s.text for s in shown)  # the whole candidates do not parse: their rungs ran
