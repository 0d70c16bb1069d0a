"""The examples run: the quickstart script, and the Colab notebook end to end, offline."""

import pathlib
import runpy

import nbformat
from nbclient import NotebookClient

import tltk

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_script_learns_and_exports(tmp_path):
    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="quickstart")
    accuracy = quickstart["main"](tmp_path / "run", head_epochs=3, epochs=2)
    assert accuracy > 0.6  # ten classes: chance is 0.1
    assert (tmp_path / "run" / "export" / "model_int8.tflite").stat().st_size > 0


def test_colab_notebook_runs_offline_on_the_demo_backbone(tmp_path):
    notebook = nbformat.read(ROOT / "examples" / "colab_quickstart.ipynb", as_version=4)
    tags = [set(cell.metadata.get("tags", [])) for cell in notebook.cells]
    assert sum("parameters" in t for t in tags) == 1 and any("colab" in t for t in tags)
    digits = tltk.datasets.digits(tmp_path / "digits")
    parameters = (
        f'DATASET = None\nDATA_DIR = r"{digits}"\nBACKBONE = "tltk_glyphnet"\nWEIGHTS = "tltk"\n'
        "IMAGE_SIZE = 32\nBATCH_SIZE = 32\nHEAD_EPOCHS = 2\nEPOCHS = 2\n"
        f'OUT = r"{tmp_path / "run"}"\n'
    )
    cells = []
    for cell, cell_tags in zip(notebook.cells, tags):
        if "colab" in cell_tags:
            continue  # the pip install cell
        if "parameters" in cell_tags:
            cell.source = parameters
        cells.append(cell)
    notebook.cells = cells
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
    assert "int8 file says:" in text
    assert "Not on Colab; the file is at" in text
    assert (tmp_path / "run" / "export" / "model_int8.tflite").exists()
    assert (tmp_path / "run" / "report" / "confusion_matrix.png").exists()
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 3


def test_text_classification_example_learns_topics(tmp_path):
    example = runpy.run_path(
        str(ROOT / "examples" / "text_classification.py"), run_name="text_example"
    )
    accuracy = example["main"](tmp_path / "run", epochs=3, lora_rank=4)
    assert (
        accuracy > 0.35
    )  # six topics: chance is 1/6; 3 LoRA epochs (the bench trains 12 to 95.6%)
    assert (tmp_path / "run" / "export" / "saved_model").is_dir()
