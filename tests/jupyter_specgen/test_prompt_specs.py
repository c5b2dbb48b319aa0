"""Rendering of kernel specs into prompt comments (GIFT4Code style)."""

from jupyter_specgen.kernel.messages import Column, Spec
from jupyter_specgen.prompt_specs import render_summary, schema_after_cells, spec_block

DF = Spec(name="df", type="pandas.DataFrame", kind="dataframe", shape=[1000, 2],
          columns=[Column("price", "float64"), Column("city", "str")],
          examples="   price  city\n0    1.5  Oslo")
XS = Spec(name="xs", type="list", kind="container", length=3, element_type="int", examples="[1, 2, 3]")


def test_spec_block_of_a_notebook_with_a_dataframe_lists_columns_and_dtypes():
    """The rendered spec block contains the frame's columns with their dtypes and example rows, all as comments."""
    block = spec_block([DF, XS])
    assert "# df: pandas.DataFrame (1,000 rows × 2 columns)" in block
    assert "#     price: float64" in block and "#     city: str" in block
    assert "#    price  city" in block and "# xs: list, 3 items of int" in block
    assert all(line.startswith("#") for line in block.splitlines())


def test_spec_block_is_cut_at_max_chars_and_says_so():
    """Past max_chars the block stops and says how many specs were left out; no specs, no block."""
    block = spec_block([DF, XS, XS], max_chars=120)
    assert block.rstrip().endswith("more not shown") and len(block) < 200
    assert spec_block([]) == ""


def test_summary_is_one_sentence():
    """The I/O summary rendering is a sentence naming shape, columns and dtypes."""
    assert render_summary(DF) == "df is a pandas.DataFrame with 1,000 rows and 2 columns: price (float64), city (str)."


def test_schema_goes_after_the_last_defining_cell_before_the_cursor():
    """The schema comment is attached to the last cell before the active one that assigns the frame."""
    cells = ["import pandas as pd", "df = pd.read_csv('a.csv')", "df = df.dropna()", "df.", "df = 1"]
    out = schema_after_cells(cells, [DF, XS], active=3)
    assert list(out) == [2] and "#     price: float64" in out[2]
