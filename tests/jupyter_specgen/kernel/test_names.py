"""Names that code refers to and assigns, by parsing."""

from jupyter_specgen.kernel.names import assigned_names, referenced_names


def test_referenced_names_nearest_the_cursor_first():
    """Loaded names come back once each, the last-used first; attribute chains count by their root."""
    assert referenced_names("import pandas as pd\ndf = pd.read_csv(path)\ny = df.price.mean() + z") == \
        ["z", "df", "path", "pd"]


def test_referenced_names_of_incomplete_code_use_the_tokenizer():
    """Code cut at the cursor (unclosed brackets) still yields its names, not attribute names or keywords."""
    assert referenced_names("for k in ks:\n    df.groupby(k)[[cols, other") == ["other", "cols", "k", "df", "ks"]


def test_assigned_names_cover_every_top_level_binding():
    """Assignments, unpacking, for/with targets, imports, defs, walrus, except-as; not function locals or comprehension variables."""
    code = ("a, (b, c) = 1, (2, 3)\nfor i in x:\n    q = 1\nimport os.path, numpy as np\ndef f():\n    w = 1\n"
            "if (t := 3):\n    pass\nwith open(p) as fh:\n    pass\ntry:\n    pass\nexcept E as e:\n    k = 1\n"
            "[z for z in y]\nl += 1\nm: int = 2")
    assert assigned_names(code) == ["a", "b", "c", "i", "q", "os", "np", "f", "t", "fh", "e", "k", "l", "m"]
    assert assigned_names("x = (") == []
