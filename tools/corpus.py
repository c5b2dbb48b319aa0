"""The training corpus of the default model: permissively licensed Python source from installed
packages, plus notebook-style text synthesised from it.

Nothing is downloaded. Every package's licence is read from its dist-info metadata and must match
a permissive allow-list, or the package is skipped; what was used (name, version, licence, files,
characters) is returned so the trainer can write it into ``MANIFEST.json`` next to the weights.

Notebook-style text is the linearisation the backend builds its prompts from: cells separated by
``\\n\\n# In[ ]:\\n`` lines, markdown as ``# `` comments. Two sources:

- docstring examples (``>>> `` / ``... `` lines) become code cells, the docstring's summary
  line a markdown cell before them (pandas, numpy and matplotlib have thousands of these);
- modules become notebooks by cutting them into cells at top-level statements.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as metadata
import logging
import platform
import random
import re
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CELL_SEPARATOR",
    "CorpusConfig",
    "Document",
    "SourceInfo",
    "collect_corpus",
    "docstring_notebooks",
    "module_as_notebook",
]

log = logging.getLogger(__name__)

# Same separator as the backend's prompt builder: a blank line, then the IPython-export marker.
CELL_SEPARATOR = "\n\n# In[ ]:\n"

# Licence strings (metadata ``License-Expression``, ``License`` or classifiers) we accept.
_PERMISSIVE = re.compile(
    r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|0BSD|Zlib|CC0|Unlicense|Public Domain)",
    re.IGNORECASE,
)
# Anything copyleft in the licence text disqualifies the package, even next to a permissive name.
_COPYLEFT = re.compile(r"\b(GPL|LGPL|AGPL|MPL|Mozilla|EPL|CDDL)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CorpusConfig:
    # Installed distributions read besides the standard library (import name is looked up from
    # the distribution's top-level packages). Chosen for notebook relevance: data science first.
    packages: tuple[str, ...] = (
        "pandas",
        "numpy",
        "matplotlib",
        "networkx",
        "requests",
        "click",
        "jinja2",
        "ipython",
        "ipykernel",
        "jupyter_client",
        "jupyter_core",
        "nbformat",
        "nbconvert",
        "jupyter_server",
        "transformers",
        "peft",
        "accelerate",
        "pydantic",
        "attrs",
        "packaging",
        "fsspec",
        "httpx",
        "python-dateutil",
    )
    max_chars_per_package: int = 2_500_000  # keeps big packages (transformers) from dominating
    max_chars_stdlib: int = 5_000_000
    max_file_chars: int = 200_000  # generated tables and vendored blobs are not code worth learning
    heldout_fraction: float = 0.04  # files, chosen by a hash of their path (stable across runs)
    notebook_fraction: float = 0.3  # modules also emitted cut into cells
    seed: int = 0


@dataclass
class SourceInfo:
    name: str
    version: str
    license: str
    files: int = 0
    chars: int = 0


@dataclass(frozen=True)
class Document:
    text: str
    origin: str  # "<package>/<relative path>" — also what the held-out split hashes
    kind: str  # "module" | "notebook" | "doctest-notebook"


@dataclass
class Corpus:
    train: list[Document] = field(default_factory=list)
    heldout: list[Document] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)


def _license_of(dist: metadata.Distribution) -> str | None:
    """The distribution's licence if it is permissive, else ``None``."""
    md = dist.metadata
    candidates = [md.get("License-Expression") or ""]
    candidates.append((md.get("License") or "").split("\n")[0][:120])
    candidates += [c.split("::")[-1].strip() for c in md.get_all("Classifier") or [] if c.startswith("License ::")]
    text = " | ".join(c.strip() for c in candidates if c and c.strip() and c.strip() != "UNKNOWN")
    if not text or _COPYLEFT.search(text) or not _PERMISSIVE.search(text):
        return None
    return text


def permissive_distributions(names) -> Iterator[tuple[metadata.Distribution, str]]:
    """(distribution, licence) of each of ``names`` that is installed under a permissive licence;
    the others are logged and skipped."""
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            log.info("package %s not installed; skipped", name)
            continue
        lic = _license_of(dist)
        if lic is None:
            log.warning("package %s: licence not on the permissive allow-list; skipped", name)
            continue
        yield dist, lic


def _heldout(origin: str, fraction: float) -> bool:
    digest = hashlib.sha1(origin.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _package_files(dist: metadata.Distribution) -> list[Path]:
    files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".py")]
    return sorted(p for p in files if p.is_file())


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def _read(path: Path, limit: int) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip() or len(text) > limit:
        return None
    return text


_DOCTEST = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)(.*)$")


def _parse(text: str) -> ast.Module:
    """``ast.parse`` without the warnings of the code it reads (invalid escapes in other packages'
    sources and docstring examples are theirs to fix, not noise for whoever builds the corpus)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text)


def docstring_notebooks(source: str) -> list[str]:
    """Notebook-style text from the ``>>>`` examples of every docstring in ``source``.

    Each docstring with examples becomes one notebook: a markdown cell with its summary line, then
    code cells; a blank line or prose between examples starts a new cell, so related statements
    stay together the way a user would type them.
    """
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError):
        return []
    notebooks = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            continue
        doc = ast.get_docstring(node)
        if not doc or ">>>" not in doc:
            continue
        cells: list[list[str]] = []
        current: list[str] = []
        for line in doc.splitlines():
            m = _DOCTEST.match(line)
            if m:
                current.append(m.group(4))
            elif current:
                cells.append(current)
                current = []
        if current:
            cells.append(current)
        code_cells = []
        for cell in cells:
            text = "\n".join(cell).strip("\n")
            try:
                _parse(text)
            except (SyntaxError, ValueError):
                continue  # doctest fragments with IPython magics or elided output
            code_cells.append(text)
        if not code_cells:
            continue
        summary = doc.strip().splitlines()[0].strip()
        name = getattr(node, "name", "")
        header = f"# {name}: {summary}" if name else f"# {summary}"
        notebooks.append(CELL_SEPARATOR.join([header, *code_cells]))
    return notebooks


def module_as_notebook(source: str) -> str | None:
    """The module cut into cells at top-level statements (imports together, one def/class each)."""
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError):
        return None
    lines = source.splitlines()
    cells: list[str] = []
    pending: list[str] = []
    last_kind = None
    for node in tree.body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        chunk = "\n".join(lines[start : node.end_lineno]).strip("\n")
        kind = "import" if isinstance(node, (ast.Import, ast.ImportFrom)) else "block"
        is_docstring = isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant)
        if is_docstring and isinstance(node.value.value, str):
            summary = node.value.value.strip().splitlines()
            if summary:
                cells.append("# " + summary[0].strip())  # the module docstring as a markdown cell
            continue
        if kind == "import" and last_kind == "import":
            pending.append(chunk)
        else:
            if pending:
                cells.append("\n".join(pending))
            pending = [chunk]
        last_kind = kind
    if pending:
        cells.append("\n".join(pending))
    if len(cells) < 2:
        return None
    return CELL_SEPARATOR.join(cells)


def collect_corpus(config: CorpusConfig = CorpusConfig()) -> Corpus:
    """Read the standard library and the configured packages into train and held-out documents."""
    rng = random.Random(config.seed)
    corpus = Corpus()
    groups: list[tuple[SourceInfo, list[Path], Path | None, int]] = []

    stdlib_root = Path(sysconfig.get_paths()["stdlib"])
    groups.append(
        (
            SourceInfo("python-stdlib", platform.python_version(), "PSF-2.0"),
            _stdlib_files(),
            stdlib_root,
            config.max_chars_stdlib,
        )
    )
    for dist, lic in permissive_distributions(config.packages):
        groups.append(
            (
                SourceInfo(dist.metadata["Name"], dist.version, lic),
                _package_files(dist),
                Path(str(dist.locate_file(""))),
                config.max_chars_per_package,
            )
        )

    for info, files, root, budget in groups:
        files = list(files)
        rng.shuffle(files)  # the budget takes a random sample of the package, not its first folders
        for path in files:
            if info.chars >= budget:
                break
            text = _read(path, config.max_file_chars)
            if text is None:
                continue
            rel = str(path.relative_to(root)) if root else path.name
            origin = f"{info.name}/{rel}"
            docs = [Document(text, origin, "module")]
            if rng.random() < config.notebook_fraction:
                nb = module_as_notebook(text)
                if nb:
                    docs.append(Document(nb, origin, "notebook"))
            docs += [Document(nb, origin, "doctest-notebook") for nb in docstring_notebooks(text)]
            target = corpus.heldout if _heldout(origin, config.heldout_fraction) else corpus.train
            target.extend(docs)
            info.files += 1
            info.chars += len(text)
        corpus.sources.append(info)
    return corpus
