"""Every chapter, executed end to end on the `smoke` profile through the runner (once per test
session), its .ipynb pair in sync, and the whole book built with Jupyter Book's -W."""
import json
from pathlib import Path

import jupytext
import pytest

from gatlib import pairing

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = pairing.all_notebooks()          # book chapters and drafts
BOOK_CHAPTERS = sorted((ROOT / "notebooks").glob("*.md"))


# `smoke_runs` (every notebook run once on `smoke`) and `smoke_book` (the book built from them)
# are session fixtures in conftest.py: test_browser.py reuses the same build.


def test_there_are_chapters():
    assert NOTEBOOKS, "notebooks/*.md is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pair_is_in_sync(path):
    assert pairing.out_of_sync(path) is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_typed_parameters_cell(path):
    notebook = jupytext.read(path)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    for name in ('profile = "default"', "seed = ", 'device = "auto"'):
        assert name in tagged[0].source, f"{path.name}: parameters cell lacks {name!r}"
    assert "smoke" in notebook.metadata["gat"]["profiles"], f"{path.name}: no smoke preset"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_smoke(path, smoke_runs):
    runs_dir, results = smoke_runs
    result = results[path.stem]
    assert result["status"] == "ok", result.get("error")
    assert result["profile"] == "smoke" and result["parameters"]["profile"] == "smoke"
    assert result["numbers"], f"{path.name} recorded no numbers"
    assert result["stamp"]["profile"] == "smoke"
    saved = json.loads((runs_dir / path.stem / result["run_id"] / "results.json").read_text())
    assert saved["numbers"] == result["numbers"]


@pytest.mark.notebooks
def test_executed_chapters_hold_their_figures(smoke_runs):
    runs_dir, results = smoke_runs
    executed = runs_dir / "00_setup" / results["00_setup"]["run_id"] / "00_setup.ipynb"
    assert '"image/png"' in executed.read_text(), "figures must be drawn inline (whatever MPLBACKEND says)"


def test_setup_chapter_numbers_are_accuracies(smoke_runs):
    numbers = smoke_runs[1]["00_setup"]["numbers"]
    for key in ("table1.original.clean", "table3.original.in_domain", "table3.original.out_of_domain"):
        assert 0.0 <= numbers[key] <= 1.0
    # the zoo classifier is far better than chance on both domains, and better in domain
    assert numbers["table3.original.in_domain"] > 0.95
    assert 0.3 < numbers["table3.original.out_of_domain"] < numbers["table3.original.in_domain"]


@pytest.mark.book
def test_book_builds_on_smoke_with_warnings_as_errors(smoke_book):
    completed = smoke_book.completed
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    html = smoke_book.html
    assert (html / "index.html").is_file()
    chapter = (html / "notebooks" / "00_setup.html").read_text()
    assert "Run stamp" in chapter and "profile <code" in chapter
    assert "<img" in chapter, "the executed chapter shows its figures"
    reproduction = (html / "book" / "reproduction.html").read_text()
    assert "not yet" in reproduction


def test_every_chapter_is_in_the_table_of_contents():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {chapter["file"] for part in toc["parts"] for chapter in part["chapters"]}
    missing = [path.stem for path in BOOK_CHAPTERS if f"notebooks/{path.stem}" not in files]
    assert not missing, f"chapters missing from _toc.yml: {missing}"
    drafts = [f"notebooks/drafts/{path.stem}" for path in NOTEBOOKS if path.parent.name == "drafts"]
    assert not set(drafts) & files, "a draft chapter is in the book: move it to notebooks/ first"


def test_rewriting_a_pair_changes_no_byte(tmp_path):
    source = tmp_path / "chapter.md"
    source.write_text(NOTEBOOKS[0].read_text())
    first = pairing.write_pair(source).read_bytes()
    assert pairing.write_pair(source).read_bytes() == first   # cell ids are not random


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_installs_gatlib_on_colab_only(path):
    notebook = jupytext.read(path)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "colab-install" in first.metadata.get("tags", [])
    assert 'if "google.colab" in sys.modules:' in first.source      # a no-op outside Colab
    assert "git+https://github.com/gat-book/gat-book" in first.source
    installs = [line for line in first.source.splitlines() if "install" in line and not line.lstrip().startswith("#")]
    assert installs and not any("torch" in line for line in installs)   # Colab keeps its own torch


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_attack_with_the_step_sizes_the_zoo_models_were_trained_with(path):
    """A chapter's default ε/δ must be chapter 02's choice, recorded in gatlib.finetune.DEFAULTS
    (the zoo's GAT recipes): else loading the zoo's GAT models would fail on a recipe mismatch."""
    from gatlib import finetune, runbook

    notebook = jupytext.read(path)
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    defaults = runbook.parse_parameters_cell(cell.source, path.name)
    if path.stem == "02_latent_attacks":    # chooses them (0 = run the search)
        assert defaults["eps"] == 0 and defaults["delta"] == 0
        return
    for name in ("eps", "delta"):
        if name in defaults:
            assert defaults[name] == finetune.DEFAULTS[name], f"{path.name}: {name} = {defaults[name]}"


@pytest.mark.notebooks
def test_the_attack_explorer_is_a_static_figure_in_batch_runs(smoke_runs):
    runs_dir, results = smoke_runs
    executed = runs_dir / "02_latent_attacks" / results["02_latent_attacks"]["run_id"] / "02_latent_attacks.ipynb"
    notebook = json.loads(executed.read_text())
    cells = [cell for cell in notebook["cells"] if "widgets.attack_explorer(" in "".join(cell["source"])]
    assert len(cells) == 1
    kinds = [kind for output in cells[0]["outputs"] for kind in output.get("data", {})]
    assert "image/png" in kinds, "the explorer's starting figure is drawn"
    assert "application/vnd.jupyter.widget-view+json" not in kinds, "no live widget in a batch run"
