"""Keep every ``notebooks/*.md`` (MyST, the source of truth) paired with a ``.ipynb`` for Colab.

The ``.ipynb`` is committed with outputs stripped: Colab opens it from the repository, and the
book's launch buttons point at it. ``python -m gatlib.pairing`` rewrites every pair from its
``.md``; ``python -m gatlib.pairing --check`` fails when a pair is out of sync (a test runs it).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def all_notebooks() -> list[Path]:
    """Every chapter source: ``notebooks/*.md`` (in the book) and ``notebooks/drafts/*.md`` (chapters
    whose default-profile assets, e.g. a zoo model still training, are not ready: smoke-tested,
    not yet in the table of contents)."""
    return sorted(NOTEBOOK_DIR.glob("*.md")) + sorted((NOTEBOOK_DIR / "drafts").glob("*.md"))


def paired_notebook(md_path: str | Path) -> nbformat.NotebookNode:
    """The ``.ipynb`` form of a MyST notebook, without outputs or execution counts."""
    notebook = jupytext.read(md_path)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        # ids from the position and source, so rewriting an unchanged pair changes no byte
        cell.id = hashlib.sha1(f"{index}:{cell.source}".encode()).hexdigest()[:8]
    notebook.metadata.setdefault("jupytext", {})["formats"] = "ipynb,md:myst"
    return notebook


def _cells(notebook) -> list[tuple[str, str, tuple]]:
    return [(cell.cell_type, cell.source.strip(), tuple(cell.get("metadata", {}).get("tags", [])))
            for cell in notebook.cells]


def out_of_sync(md_path: str | Path) -> str | None:
    """``None`` when ``NAME.ipynb`` holds exactly ``NAME.md``'s cells and no outputs, else why not."""
    md_path = Path(md_path)
    ipynb_path = md_path.with_suffix(".ipynb")
    if not ipynb_path.exists():
        return f"{ipynb_path} is missing"
    committed = nbformat.read(ipynb_path, as_version=4)
    if any(cell.get("outputs") for cell in committed.cells if cell.cell_type == "code"):
        return f"{ipynb_path} holds outputs; commit it stripped"
    if _cells(committed) != _cells(paired_notebook(md_path)):
        return f"{ipynb_path} differs from {md_path.name}"
    return None


def write_pair(md_path: str | Path) -> Path:
    ipynb_path = Path(md_path).with_suffix(".ipynb")
    nbformat.write(paired_notebook(md_path), ipynb_path)
    return ipynb_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatlib.pairing", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report pairs that are out of sync")
    parser.add_argument("paths", nargs="*", help="notebooks/*.md (default: all)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths] or all_notebooks()
    problems = []
    for path in paths:
        if args.check:
            if (problem := out_of_sync(path)):
                problems.append(problem)
        else:
            print(f"wrote {write_pair(path)}")
    for problem in problems:
        print(f"out of sync: {problem}  (run `python -m gatlib.pairing`)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
