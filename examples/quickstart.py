"""Quickstart: data -> builder -> fine_tune -> evaluate -> export -> predict, step by step, offline.

Runs on the demo backbone that ships with tltk and scikit-learn's handwritten digits; swap in
your own folder and `backbone="mobilenet_v2"` (ImageNet weights) for real photos.

    python examples/quickstart.py --out quickstart_run
"""

import argparse
import pathlib

import tltk


def main(out, head_epochs, epochs):
    out = pathlib.Path(out)

    # 1. Data: any folder of class folders; bad files are skipped and reported.
    folder = tltk.datasets.digits(out / "digits")
    data = tltk.data.from_directory(
        folder, image_size=(32, 32), validation_split=0.15, test_split=0.15
    )
    print(
        f"{data.num_classes} classes, counts {data.class_counts}, skipped {len(data.skipped)} files"
    )

    # 2. A classifier on a pretrained backbone: raw pixels in, preprocessing inside,
    #    backbone frozen.
    model = tltk.build_classifier(
        "tltk_glyphnet", data.num_classes, input_shape=(32, 32, 3), weights="tltk"
    )
    for group in tltk.layer_groups(model):
        print(group)

    # 3. Staged fine-tuning: head first (on cached features), then the top groups,
    #    lower rates below.
    result = tltk.fine_tune(
        model, data.train, data.validation, head_epochs=head_epochs, epochs=epochs, verbose=2
    )
    print(f"best {result.monitor} {result.best_metric:.4f} from stage {result.best_stage}")

    # 4. Evaluate on the held-out test split: report.json, confusion matrix, mistakes, curves.
    report = tltk.evaluate(model, data, out_dir=out / "report", history=result)
    print(report.summary())

    # 5. Export a SavedModel and float32 + int8 TFLite files, each checked against Keras.
    exported = tltk.export(
        model,
        out / "export",
        quantization=["float32", "int8"],
        representative_data=data.train,
        parity_data=data.test,
        labels=data.class_names,
        overwrite=True,
    )
    for f in exported.files:
        print(f.path, f"{f.size_bytes / 1e3:.0f} kB", f.parity.describe())

    # 6. Predict with the int8 file, as a phone would run it.
    predictor = tltk.load_exported(out / "export" / "model_int8.tflite")
    images = sorted((folder / "7").glob("*.png"))[:3]
    names, probabilities = predictor.predict([str(p) for p in images])
    print(list(zip([p.name for p in images], names)))
    return report.accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="quickstart_run")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    main(args.out, args.head_epochs, args.epochs)
