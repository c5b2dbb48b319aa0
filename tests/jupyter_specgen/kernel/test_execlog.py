"""The execution log keeps the user's cells, not the code our own front ends run in the kernel."""

from __future__ import annotations

from pathlib import Path

from jupyter_specgen.kernel.execlog import OWN_CODE_MARK, ExecutionLog

ROOT = Path(__file__).resolve().parents[3]


def test_the_users_cells_are_logged_and_our_own_snippets_are_not():
    log = ExecutionLog()
    namespace = {"numbers": [3, 1, 2]}
    log.before("total = sum(numbers)", namespace)
    namespace["total"] = 6
    log.after(1, namespace, success=True)
    log.before(OWN_CODE_MARK + "find_servers():\n    pass\n__specgen_find_servers()", namespace)
    log.after(0, namespace, success=True)
    assert [e.code for e in log.entries(10)] == ["total = sum(numbers)"]


def test_the_vscode_extensions_snippet_carries_the_mark():
    """vscode/src/discover.ts runs FIND_SERVERS_CODE in the notebook's kernel (it prints the
    server's token): it must begin with the mark, or it would be kept as a cell the user ran."""
    source = (ROOT / "vscode" / "src" / "discover.ts").read_text()
    assert f"FIND_SERVERS_CODE = `{OWN_CODE_MARK}" in source
