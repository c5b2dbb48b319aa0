"""The command line: collect examples on the Jupyter side, personalize with a tqdm bar, list, roll back."""

from __future__ import annotations

import json
import subprocess
import sys

from jupyter_specgen.personalize.__main__ import main as collect_main
from specgen_backend.training.__main__ import main

from .conftest import write_notebooks


def test_collect_then_personalize_list_and_rollback(tiny_model, tmp_path, capsys):
    """collect writes the JSON lines; personalize shows progress and publishes; list and rollback report as JSON."""
    write_notebooks(tmp_path / "notebooks", count=4)
    assert collect_main(["collect", "--root", str(tmp_path / "notebooks"), "--user", "alice",
                         "--out", str(tmp_path / "data")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] > 0 and summary["dropped"] == {"raised": 1}
    store = tmp_path / "store"
    command = [sys.executable, "-m", "specgen_backend.training", "personalize", "--base", tiny_model,
               "--data", str(tmp_path / "data" / "train.jsonl"), "--user", "alice", "--store", str(store),
               "--steps", "3", "--batch-size", "2"]
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        assert "train" in done.stderr and "3/3" in done.stderr  # the tqdm bar
    assert json.loads(done.stdout)["version"] == "v2"
    assert main(["list", "--store", str(store), "--user", "alice"]) == 0
    assert json.loads(capsys.readouterr().out) == {"personal": {"current": "v2", "versions": ["v1", "v2"]}}
    assert main(["rollback", "--store", str(store), "--user", "alice"]) == 0
    assert json.loads(capsys.readouterr().out) == {"adapter": "personal", "current": "v1"}
    assert main(["list", "--store", str(store), "--user", "../alice"]) == 2
    assert "invalid user name" in capsys.readouterr().err
