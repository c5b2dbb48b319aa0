"""Render kernel specs as comments for the prompt, GIFT4Code style. Pure.

GIFT4Code grounds generation in execution-derived specifications rendered three ways:

- type description (``render_type_desc``): ``# df: pandas.DataFrame (1000 rows × 3 columns)``
  followed by the columns and their dtypes;
- I/O examples (``render_examples``): a few rows or elements, as ``df.head()`` would show them;
- I/O summary (``render_summary``): one sentence in plain words.

``spec_block`` puts the chosen renderings of several specs into one comment block (before the
cursor); ``schema_after_cells`` finds, for each dataframe, the last cell before the active one
that assigns it, and gives the comment to put right after that cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .kernel.messages import Spec
from .kernel.names import assigned_names

__all__ = ["Style", "render_type_desc", "render_examples", "render_summary", "render_spec", "spec_block",
           "schema_after_cells"]

Style = Literal["type", "examples", "summary", "full"]


def render_type_desc(spec: Spec) -> str:
    """Type, shape and dtypes: ``df: pandas.DataFrame (3 rows × 2 columns)`` + a column list."""
    head = f"{spec.name}: {spec.type}"
    if spec.kind == "dataframe" and len(spec.shape) == 2:
        lines = [f"{head} ({spec.shape[0]:,} rows × {spec.shape[1]} columns)"]
        lines += [f"    {c.name}: {c.dtype}" for c in spec.columns]
        if len(spec.columns) < spec.shape[1]:
            lines.append(f"    ... {spec.shape[1] - len(spec.columns)} more columns")
        return "\n".join(lines)
    if spec.kind in ("series", "array", "tensor"):
        return f"{head} shape {tuple(spec.shape)} dtype {spec.dtype}"
    if spec.kind == "container":
        inner = f" of {spec.element_type}" if spec.element_type else ""
        return f"{head}, {spec.length} items{inner}"
    if spec.kind == "callable":
        return f"{spec.name}{spec.signature}" + (f"  # {spec.doc}" if spec.doc else "")
    if spec.kind == "module":
        return f"{spec.name}: module {spec.examples}"
    if spec.kind == "scalar":
        return f"{head} = {spec.examples}"
    return head


def render_examples(spec: Spec) -> str:
    """The example rows or values, under a line saying what they are; "" when there are none."""
    if not spec.examples or spec.kind in ("module", "scalar", "callable"):
        return ""
    title = {"dataframe": f"{spec.name}.head():", "series": f"{spec.name}.head():"}.get(
        spec.kind, f"{spec.name} (first elements):")
    return title + "\n" + spec.examples


def render_summary(spec: Spec) -> str:
    """One sentence: ``df is a pandas.DataFrame with 1,000 rows and 2 columns: a (int64), b (str).``"""
    if spec.kind == "dataframe" and len(spec.shape) == 2:
        cols = ", ".join(f"{c.name} ({c.dtype})" for c in spec.columns)
        more = f" and {spec.shape[1] - len(spec.columns)} more" if len(spec.columns) < spec.shape[1] else ""
        return f"{spec.name} is a {spec.type} with {spec.shape[0]:,} rows and {spec.shape[1]} columns: {cols}{more}."
    if spec.kind in ("series", "array", "tensor"):
        return f"{spec.name} is a {spec.type} of shape {tuple(spec.shape)} and dtype {spec.dtype}."
    if spec.kind == "container":
        inner = f" of {spec.element_type}" if spec.element_type else ""
        return f"{spec.name} is a {spec.type} with {spec.length} items{inner}."
    if spec.kind == "callable":
        return f"{spec.name} is a callable with signature {spec.signature or '(...)'}."
    if spec.kind == "module":
        return f"{spec.name} is the module {spec.examples}."
    return f"{spec.name} is a {spec.type}" + (f" equal to {spec.examples}." if spec.examples else ".")


def render_spec(spec: Spec, style: Style = "full") -> str:
    """One spec as plain text (not yet commented)."""
    parts = {
        "type": [render_type_desc(spec)],
        "examples": [render_type_desc(spec), render_examples(spec)],
        "summary": [render_summary(spec)],
        "full": [render_type_desc(spec), render_examples(spec)],
    }[style]
    if spec.truncated and spec.note:
        parts.append(f"({spec.note})")
    return "\n".join(p for p in parts if p)


def spec_block(specs: Sequence[Spec], *, style: Style = "full", max_chars: int = 2000,
               title: str = "Variables in the kernel (from execution):") -> str:
    """A comment block of specs, cut (and saying so) at ``max_chars``; "" without specs."""
    if not specs:
        return ""
    lines = [_comment(title)]
    size = len(lines[0])
    for i, spec in enumerate(specs):
        text = _comment(render_spec(spec, style))
        if size + len(text) + 1 > max_chars:
            lines.append(f"# ... {len(specs) - i} more not shown")
            break
        lines.append(text)
        size += len(text) + 1
    return "\n".join(lines) + "\n"


def schema_after_cells(cells: Sequence[str], specs: Sequence[Spec], *, active: int) -> dict[int, str]:
    """{cell index: comment to append after it}: each dataframe's schema after the last cell
    before ``active`` that assigns it (GIFT4Code puts the schema after the defining cell)."""
    frames = {s.name: s for s in specs if s.kind == "dataframe"}
    defining: dict[str, int] = {}
    for index, source in enumerate(cells[: max(0, active)] if active >= 0 else cells):
        for name in assigned_names(source):
            if name in frames:
                defining[name] = index
    out: dict[int, list[str]] = {}
    for name, index in defining.items():
        out.setdefault(index, []).append(_comment(f"Schema of {name}:\n" + render_type_desc(frames[name])))
    return {index: "\n".join(parts) + "\n" for index, parts in sorted(out.items())}


def _comment(text: str) -> str:
    return "\n".join(f"# {line}" if line else "#" for line in text.splitlines())
