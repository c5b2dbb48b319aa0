"""Personalization fixtures shared by the backend and Jupyter tests: notebooks with one user's
private idioms, the training examples made of them, and a tiny base model that knows pandas.

The user ("alice") calls a helper no one else has, ``zq_tidy(...)``, on every frame she loads,
and names derived columns ``col_<what>``. Four kinds of cells (load, derive, aggregate, plot)
give the influence partition something to separate.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

TABLES = ["sales", "orders", "users", "events", "stock", "prices", "visits", "claims", "trips", "loans",
          "games", "songs", "books", "shops", "cars", "bills"]
COLS = ["amount", "price", "count", "score", "total", "weight", "size", "rate"]


def _cells(rng: random.Random, table: str) -> list[tuple[str, str]]:
    a, b = rng.sample(COLS, 2)
    return [
        ("markdown", f"Load the {table} data"),
        ("code", f"{table} = zq_tidy(pd.read_csv(\"{table}.csv\"))"),
        ("markdown", f"Add the {a} per {b}"),
        ("code", f"{table}[\"col_{a}\"] = {table}[\"{a}\"] / {table}[\"{b}\"]"),
        ("markdown", f"Total {a} by {b}"),
        ("code", f"{table}_by_{b} = {table}.groupby(\"{b}\")[\"col_{a}\"].sum()"),
        ("markdown", f"Plot the {table}"),
        ("code", f"{table}_by_{b}.plot(kind=\"bar\", title=\"{table}\")"),
    ]


def write_notebooks(root: Path, *, count: int = 12, seed: int = 0) -> list[Path]:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    # The data and the private helper, so that completions can be run after the cells before them.
    (root / "helpers.py").write_text("def zq_tidy(df):\n    return df.dropna().reset_index(drop=True)\n")
    for table in TABLES:
        rows = [",".join(COLS)] + [",".join(str((i * 7 + j) % 5 + 1) for j in range(len(COLS))) for i in range(6)]
        (root / f"{table}.csv").write_text("\n".join(rows) + "\n")
    paths = []
    for i, table in enumerate(TABLES[:count]):
        cells = [new_code_cell("import pandas as pd\nfrom helpers import zq_tidy", execution_count=1)]
        n = 2
        for kind, source in _cells(rng, table):
            if kind == "markdown":
                cells.append(new_markdown_cell(source))
            else:
                cells.append(new_code_cell(source, execution_count=n))
                n += 1
        path = root / f"analysis_{i:02d}_{table}.ipynb"
        nbformat.write(new_notebook(cells=cells), str(path))
        paths.append(path)
    # One cell that raised, which must never become an example.
    bad = new_code_cell("broken = zq_tidy(1 / 0)", execution_count=99,
                        outputs=[new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                            traceback=[])])
    nb = nbformat.read(str(paths[0]), as_version=4)
    nb.cells.append(bad)
    nbformat.write(nb, str(paths[0]))
    return paths


@pytest.fixture(scope="session")
def alice_root(tmp_path_factory):
    """Alice's Jupyter root: notebooks, their CSV data and her helper module."""
    root = tmp_path_factory.mktemp("alice-notebooks")
    write_notebooks(root)
    return root


@pytest.fixture(scope="session")
def alice_dataset(alice_root):
    """The Jupyter side's dataset for alice's fixture notebooks (train and held-out by notebook)."""
    from jupyter_specgen.personalize.dataset import DatasetOptions, build_dataset
    from jupyter_specgen.personalize.notebooks import scan_notebooks

    root = alice_root
    return build_dataset(scan_notebooks(root).notebooks, options=DatasetOptions(context_cells=3, heldout_fraction=0.25))


@pytest.fixture(scope="session")
def alice_examples(alice_dataset, tmp_path_factory):
    """(train, held-out) as the backend reads them, through the JSON-lines files."""
    from jupyter_specgen.personalize.dataset import write_jsonl
    from specgen_backend.training.examples import load_examples

    folder = tmp_path_factory.mktemp("alice-jsonl")
    write_jsonl(alice_dataset.train, folder / "train.jsonl")
    write_jsonl(alice_dataset.heldout, folder / "heldout.jsonl")
    return load_examples(folder / "train.jsonl"), load_examples(folder / "heldout.jsonl")


@pytest.fixture(scope="session")
def tiny_base(tiny_model):
    from specgen_backend.training.train import load_base

    return load_base(tiny_model)


def generic_examples(count: int = 48, seed: int = 1):
    """Code in everyone's style (no ``zq_tidy``, no ``col_`` names): what the base model knows."""
    from specgen_backend.training.examples import TrainingExample

    rng = random.Random(seed)
    out = []
    for i in range(count):
        table = rng.choice(TABLES) + rng.choice(["", "_2024", "_raw", "_eu"])
        cells = [{"cell_type": "code", "source": "import pandas as pd"}]
        for kind, source in _cells(rng, table):
            source = (source.replace(f"zq_tidy(pd.read_csv(\"{table}.csv\"))", f"pd.read_csv(\"{table}.csv\").dropna()")
                      .replace("\"col_", "\"new_"))
            if kind == "code":
                out.append(TrainingExample(notebook=f"generic_{i}", cells_before=cells[-3:], target=source))
            cells.append({"cell_type": kind, "source": source})
    return out


def pretrain(base, examples, *, steps: int, lr: float = 3e-3, seed: int = 0) -> None:
    """Full-parameter training of the tiny random model so it writes pandas-shaped code at all.

    A random-weight model's tied embeddings are too small for a LoRA alone to make confident
    predictions; a real base model has learnt them, this gives the tiny one the same footing.
    """
    import torch

    from specgen_backend.training.train import TrainConfig, _collate, encode

    torch.manual_seed(seed)
    rng = random.Random(seed)
    config = TrainConfig()
    encoded = [encode(base, e, config) for e in examples]
    model = base.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = rng.sample(encoded, min(16, len(encoded)))
        ids, labels, mask = _collate(batch, base.tokenizer.pad_token_id, base.device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


@pytest.fixture(scope="session")
def pandas_base(tiny_model, tmp_path_factory):
    """The tiny model after learning everyone's pandas style (saved, then loaded as any base is)."""
    from specgen_backend.training.train import load_base

    base = load_base(tiny_model)
    pretrain(base, generic_examples(200), steps=400)
    folder = tmp_path_factory.mktemp("pandas-base")
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return load_base(folder)


def idiom_rate(predictions, examples) -> float:
    """Share of held-out cells written with alice's idiom (``zq_tidy(`` or ``"col_``) whose
    completion uses it too."""
    marks = ("zq_tidy(", "\"col_")
    relevant = [(p, e) for p, e in zip(predictions, examples) if any(m in e.target for m in marks)]
    assert relevant, "the fixture must hold out cells with the idiom"
    return sum(any(m in p for m in marks) for p, _ in relevant) / len(relevant)
