"""The examples run: the quickstart script, and the Colab notebook end to end, offline."""

import pathlib
import runpy

import nbformat
import pytest
from nbclient import NotebookClient


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_script_learns_and_exports(tmp_path):
    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="quickstart")
    accuracy = quickstart["main"](tmp_path / "run", head_epochs=3, epochs=2)
    assert accuracy > 0.6  # ten classes: chance is 0.1
    assert (tmp_path / "run" / "export" / "model_int8.tflite").stat().st_size > 0


@pytest.mark.slow  # 25 s on 2 cores: CI's slow step runs it
def test_colab_notebook_runs_offline_with_each_fallback(tmp_path):
    """Every cell runs, the Colab-only ones too: offline, each says so and falls back (installed
    tltk, digits for tf_flowers, the demo backbone for ImageNet weights, no GPU, no download)."""
    notebook = nbformat.read(ROOT / "examples" / "colab_quickstart.ipynb", as_version=4)
    tags = [set(cell.metadata.get("tags", [])) for cell in notebook.cells]
    assert sum("parameters" in t for t in tags) == 1 and sum("colab" in t for t in tags) == 2
    install = next(c for c, t in zip(notebook.cells, tags) if "colab" in t)
    assert "tltk_keras-*.whl" in install.source and "./tltk" in install.source
    assert "github.com" not in "".join(c.source for c in notebook.cells)
    for cell, cell_tags in zip(notebook.cells, tags):
        if "parameters" in cell_tags:  # the defaults (tf_flowers, ImageNet), shorter training
            cell.source += f'\nHEAD_EPOCHS = 2\nEPOCHS = 1\nOUT = r"{tmp_path / "run"}"\n'
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    text = "\n".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "tltk is installed." in text
    assert "using scikit-learn's digits instead" in text
    assert "weights unavailable" in text and "using tltk_glyphnet instead" in text
    assert "No GPU" in text or "GPU: " in text
    assert "int8 file says:" in text
    assert "Not on Colab; the file is at" in text
    assert (tmp_path / "run" / "export" / "model_int8.tflite").exists()
    assert (tmp_path / "run" / "report" / "confusion_matrix.png").exists()
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 3


@pytest.mark.slow  # 50 s on 2 cores: CI's slow step runs it
def test_text_classification_example_learns_topics(tmp_path):
    example = runpy.run_path(
        str(ROOT / "examples" / "text_classification.py"), run_name="text_example"
    )
    accuracy = example["main"](tmp_path / "run", epochs=3, lora_rank=4)
    assert (
        accuracy > 0.35
    )  # six topics: chance is 1/6; 3 LoRA epochs (the bench trains 12 to 95.6%)
    assert (tmp_path / "run" / "export" / "saved_model").is_dir()
