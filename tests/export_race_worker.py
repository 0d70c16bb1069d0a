"""A tiny classifier whose output names the export it came from, and the worker processes of the
export race test (`python tests/export_race_worker.py writer|loader INDEX OUT STOP`).

Writer `w`, round `r` exports `w + 2` classes named `w{w}r{r}c{j}` and predicts class
`r % (w + 2)` on any image, so a SavedModel's graph, variables and labels taken from two different
exports disagree (or fail to load): `check_whole` finds it.
"""

import json
import pathlib
import sys

import keras
import numpy as np


def tiny_model(writer):
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(writer + 2, activation="softmax")(pooled))


def identify(model, writer, round_):
    """Sets `model`'s weights for round `round_` of `writer`; returns that export's labels."""
    classes = writer + 2
    bias = np.zeros(classes, "float32")
    bias[round_ % classes] = 10.0
    model.layers[-1].set_weights([np.zeros((3, classes), "float32"), bias])
    return [f"w{writer}r{round_}c{j}" for j in range(classes)]


def check_whole(predictor):
    """Checks that the predictor's labels and predictions come from one export; returns its id."""
    names, _ = predictor.predict(np.zeros((1, 8, 8, 3), "float32"))
    labels = predictor.class_names
    prefix = labels[0][: labels[0].index("c")]
    writer, round_ = (int(x) for x in prefix[1:].split("r"))
    expected = [f"{prefix}c{j}" for j in range(writer + 2)]
    assert labels == expected, f"labels {labels} are not one export's"
    assert names == [expected[round_ % (writer + 2)]], f"{names}: variables not of {prefix}"
    return prefix


def main(role, index, out, stop):
    from tltk.export import export, load_exported

    if role == "writer":
        model, rounds = tiny_model(index), 0
        while not stop.exists():
            labels = identify(model, index, rounds)
            export(model, out, formats=["saved_model"], labels=labels, overwrite=True)
            rounds += 1
        return {"exports": rounds}
    loads, seen = 0, set()
    (stop.parent / "loader_ready").touch()
    while not stop.exists():
        if out.exists():
            seen.add(check_whole(load_exported(out)).split("r")[0])
            loads += 1
    return {"loads": loads, "writers_seen": sorted(seen)}


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    role, index, out, stop = sys.argv[1:]
    print(json.dumps(main(role, int(index), pathlib.Path(out), pathlib.Path(stop))))
