"""Prompt building: notebook linearisation, FIM, truncation, stops and echo stripping."""

from __future__ import annotations

from specgen_backend.prompt import (
    FIM_FORMATS,
    build_prompt,
    clean_completion,
    detect_fim,
    linearise,
    mid_line,
    partial_stop_length,
    stop_strings,
)
from specgen_backend.protocol import Cell, CompletionContext

QWEN = FIM_FORMATS[0]


def _context(**kw) -> CompletionContext:
    cells = [Cell("markdown", "Load the data\nfrom disk"), Cell("code", "import pandas as pd"), Cell("code", ""), Cell("code", "df.head()")]
    return CompletionContext(prefix="df = pd.read_csv(", suffix=")", cells=cells, active=2, **kw)


def test_linearise_uses_cell_separators_and_comments_markdown():
    """Cells are introduced by `# In[ ]:`; markdown becomes comments; the cursor splits the text."""
    head, tail = linearise(_context())
    assert head == "# In[ ]:\n# Load the data\n# from disk\n\n# In[ ]:\nimport pandas as pd\n\n# In[ ]:\ndf = pd.read_csv("
    assert tail == ")\n\n# In[ ]:\ndf.head()\n"


def test_preamble_goes_before_the_cursor_cell_text():
    """The server's spec block is rendered right above the edited cell's text."""
    head, _ = linearise(_context(preamble="# df: DataFrame"))
    assert head.endswith("# In[ ]:\n# df: DataFrame\ndf = pd.read_csv(")


def test_fim_prompt_holds_prefix_and_suffix_in_psm_order():
    """With FIM tokens the suffix is in the prompt, between the suffix and middle markers."""
    prompt = build_prompt(_context(), fim=QWEN, count_tokens=len, max_prompt_tokens=10_000)
    assert prompt.fim
    assert prompt.text.startswith(QWEN.prefix) and prompt.text.endswith(QWEN.middle)
    assert f"{QWEN.suffix})\n\n# In[ ]:\ndf.head()" in prompt.text


def test_plain_prompt_ends_at_the_cursor():
    """Without FIM the prompt is the text before the cursor."""
    prompt = build_prompt(_context(), fim=None, count_tokens=len, max_prompt_tokens=10_000)
    assert prompt.text.endswith("df = pd.read_csv(") and not prompt.fim


def test_truncation_keeps_the_cursor_neighbourhood():
    """A long notebook is cut at its far end, never at the cursor."""
    cells = [Cell("code", f"x{i} = {i}") for i in range(500)] + [Cell("code", "")]
    context = CompletionContext(prefix="y = x499 +", cells=cells, active=500)
    prompt = build_prompt(context, fim=None, count_tokens=len, max_prompt_tokens=300)
    assert len(prompt.text) <= 300
    assert prompt.text.endswith("x499 = 499\n\n# In[ ]:\ny = x499 +")


def test_detect_fim_from_vocabulary():
    """The FIM format is found from the tokenizer's special tokens, or None."""
    assert detect_fim({"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3}) == QWEN
    assert detect_fim({"a": 1}) is None


def test_stops_are_the_separator_anywhere_and_blank_lines():
    """The cell separator stops wherever it starts; a mid-line end of line is the statement scanner's job, not a stop string."""
    stops = stop_strings(CompletionContext(prefix="f(", suffix=")"))
    assert "In[" in stops and "\n\n\n" in stops and "\n" not in stops
    assert mid_line(CompletionContext(prefix="f(", suffix=")"))
    assert not mid_line(CompletionContext(prefix="for x in y:\n", suffix="\nprint(1)"))


def test_partial_stop_is_held_back():
    """Text that may become a stop string is not streamed yet."""
    assert partial_stop_length("x = 1\n# In", ["\n# In["]) == 5
    assert partial_stop_length("x = 1  # In", stop_strings(CompletionContext(prefix=""))) == 2
    assert partial_stop_length("x = 1", ["\n# In["]) == 0


def test_clean_completion_strips_echoes():
    """A repeated current line and a run-on into the suffix are cut."""
    context = CompletionContext(prefix="total = sum(", suffix="values)\nprint(total)")
    assert clean_completion("values)", context) == ""
    assert clean_completion("[v * 2 for v in values)", context) == "[v * 2 for v in "
    context = CompletionContext(prefix="import numpy", suffix="")
    assert clean_completion("import numpy as np", context) == " as np"
