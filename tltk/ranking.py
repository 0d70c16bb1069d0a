"""`rank_backbones`: score candidate backbones on the user's own labelled data, before training.

Each candidate's pooled features are computed once (in inference mode, the images resized to
its own input size by `tltk.data`'s resize), then scored by `tltk.transferability`. The result, a
`Ranking`, keeps each candidate's built model and features, so the winner can be fine-tuned
without building or extracting again (`Ranking.model`, `Ranking.features`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
import warnings

import keras
import numpy as np

from tltk import atomic, transferability
from tltk.argcheck import integer
from tltk.feature_cache import KnownFeatures, cut_layer, extractor_digest
from tltk.features import labelled_examples, pooled_features
from tltk.objectives import output_activation, output_layer
from tltk.transfer_model import TransferModel

METHODS = ("logme", "leep", "hscore", "knn", "linear")
ACCURACY_METHODS = ("knn", "linear")  # scores that are accuracies, with a chance level
NEAR_CHANCE = 0.1  # "close to chance": within this fraction of the way from chance to perfect


@dataclasses.dataclass
class RankRow:
    """One candidate's scores.

    Attributes:
        name: str. The registry name, or the built model's name.
        score: float. Its score by the ranking's method (`nan` where the method does not apply,
            such as LEEP without a source classifier); larger is better.
        seconds: float. Time to build it, extract its features and score them.
        feature_dim: int. Width of its pooled features.
        scores: dict. `{method: score}` for every method computed.
    """

    name: str
    score: float
    seconds: float
    feature_dim: int
    scores: dict


@dataclasses.dataclass
class Ranking:
    """What `rank_backbones` found: candidates best first, and what it warned about.

    Attributes:
        method: str. The method that orders `rows` (`"logme"` for `method="all"`).
        rows: list of RankRow. Best first; candidates whose score is `nan` last.
        warnings: list of str. The warnings it gave (also issued as `UserWarning`).
        models: dict. `{name: keras.Model}`: the built candidates passed in, and the best
            registry candidate as built for this data (a new head for its classes), ready for
            `tltk.fine_tune`; the other registry candidates are not kept (`model(name)` builds
            them again), so ranking many large backbones does not hold them all in memory.
        features: dict. `{name: (features, labels)}` arrays of the examples scored.
    """

    method: str
    rows: list
    warnings: list
    models: dict
    features: dict
    _digests: dict = dataclasses.field(default_factory=dict, repr=False)
    _extractors: dict = dataclasses.field(default_factory=dict, repr=False)
    _build: tuple = (None, None)  # (num_classes, weights) of the registry candidates

    @property
    def best(self):
        """The best `RankRow`."""
        return self.rows[0]

    def model(self, name=None):
        """The candidate `name` (default: the best) as built for the ranking; a registry
        candidate that was not kept is built again (same backbone weights, a new head)."""
        name = self.best.name if name is None else name
        if name not in self.models:
            if name not in self.features:
                raise ValueError(f"No candidate {name!r}; the candidates: {sorted(self.features)}")
            self.models[name] = _build(name, *self._build)
        return self.models[name]

    def known_features(self, name=None):
        """The features of candidate `name` (default: the best) as `fine_tune(...,
        cache_features=...)` takes them: its head stage then skips the backbone for the images
        ranked (same pixels at the model's input size), e.g. `data.train` and `data.validation`
        of the `ImageData` ranked."""
        name = self.best.name if name is None else name
        features, digests = self.features[name][0], self._digests[name]
        return KnownFeatures(self._extractors[name], dict(zip(digests, features)))

    def table(self):
        """The ranking as a plain-text table."""
        methods = [m for m in METHODS if any(m in row.scores for row in self.rows)]
        header = ["rank", "backbone", *methods, "features", "seconds"]
        lines = [
            [str(i), row.name, *(_number(row.scores.get(m)) for m in methods)]
            + [str(row.feature_dim), f"{row.seconds:.1f}"]
            for i, row in enumerate(self.rows, start=1)
        ]
        widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
        return "\n".join(
            "  ".join(
                cell.rjust(w) if c != 1 else cell.ljust(w)
                for c, (cell, w) in enumerate(zip(r, widths))
            )
            for r in [header, *lines]
        )

    def __str__(self):
        return self.table()

    def to_dataframe(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("`to_dataframe` needs pandas: pip install pandas") from error
        return pandas.DataFrame(
            [
                {"backbone": r.name, **r.scores, "feature_dim": r.feature_dim, "seconds": r.seconds}
                for r in self.rows
            ]
        )

    def plot(self, path):
        """Writes a bar chart of the scores by the ranking's method to `path` (PNG); returns it."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        rows = [r for r in self.rows if math.isfinite(r.score)]
        figure, axis = pyplot.subplots(figsize=(6, 0.5 + 0.4 * max(len(rows), 1)))
        axis.barh([r.name for r in rows][::-1], [r.score for r in rows][::-1], color="tab:blue")
        axis.set_xlabel(f"{self.method} (larger is better)")
        axis.set_title("Backbones ranked on your data")
        figure.tight_layout()
        path = pathlib.Path(path)
        with atomic.writing(path) as partial:
            figure.savefig(partial, format="png", dpi=100)
        pyplot.close(figure)
        return path


def _number(value):
    return "-" if value is None else ("n/a" if not math.isfinite(value) else f"{value:.4g}")


def rank_backbones(
    data,
    backbones,
    *,
    method="logme",
    max_examples=None,
    weights=None,
    batch_size=64,
    seed=0,
    verbose=1,
):
    """Ranks candidate backbones by how well their frozen features fit `data`'s labels.

    One forward pass per candidate, no training: LogME by default (see `tltk.transferability`
    for every method). It warns when even the best candidate scores close to chance, or no
    better than a random-initialised copy of itself: the data may be too far from every
    candidate's pretraining, and fine-tuning from scratch may do as well.

    Args:
        data: `tltk.data.ImageData` (its training and validation examples), or `(x, labels)`
            arrays: images `(n, h, w, 3)` in 0..255 at any size (each candidate sees them resized
            to its input size), or, for text classifiers, a list of strings. Labels are class
            indexes (one-hot labels are accepted).
        backbones: list. Registry names (built with `tltk.build_classifier` for these classes),
            and built models (`tltk.TransferModel`s, named by their model name: a model built
            with `weights=` a file is its own candidate; a text classifier for text data).
        method: str. `"logme"`, `"leep"` (needs a source classifier: a built candidate whose
            output is a softmax over its source classes, such as a model trained on another task;
            `nan` for the others), `"hscore"`, `"knn"` (leave-one-out), `"linear"`
            (cross-validated probe) or `"all"` (every score; ordered by LogME). Defaults to
            `"logme"`.
        max_examples: int or None. Score a stratified random subset of at most this many
            examples. Defaults to `None` (all).
        weights: str or None. `weights=` for the candidates given by name. Defaults to `None`:
            each one's default pretrained weights.
        batch_size: int. Images per forward pass. Defaults to `64`.
        seed: int. Seed of the `max_examples` subset. Defaults to `0`.
        verbose: int. 0 silent, 1 a progress bar per candidate and the table. Defaults to `1`.

    Returns:
        A `Ranking`.

    Example:

    ```python
    data = tltk.data.from_directory("photos", image_size=(224, 224))
    ranking = tltk.rank_backbones(data, ["mobilenet_v2", "efficientnet_b0", "resnet50"])
    print(ranking)                     # the table, best first
    model = ranking.model()            # the winner, built for these classes
    tltk.fine_tune(model, data.train, data.validation)
    ```
    """
    methods = _check_method(method)
    x, labels, num_classes = labelled_examples(data, max_examples, seed)
    batch_size = integer("batch_size", batch_size, minimum=1)
    candidates = _candidates(backbones, num_classes, weights)
    rows, models, features, digests, extractors = [], {}, {}, {}, {}
    for name, model, built_here in candidates:
        start = time.perf_counter()
        if model is None:
            model = _build(name, num_classes, weights)
        if verbose:
            print(f"Extracting features: {name}")
        pooled, digests[name] = pooled_features(model, x, batch_size, verbose, digests=True)
        scores = {}
        for m in methods:
            if m == "leep":
                source = _source_probabilities(model, x, batch_size, built_here)
                scores[m] = math.nan if source is None else transferability.leep(source, labels)
            else:
                scores[m] = transferability.SCORES[m](pooled, labels)
        seconds = time.perf_counter() - start
        rows.append(RankRow(name, scores[methods[0]], seconds, pooled.shape[1], scores))
        models[name], features[name] = model, (pooled, labels)
        extractors[name] = extractor_digest(model)
    rows.sort(key=lambda r: (not math.isfinite(r.score), -r.score if math.isfinite(r.score) else 0))
    for name, _, built_here in candidates:
        if built_here and name != rows[0].name:
            del models[name]  # built again on demand by `Ranking.model`
    ranking = Ranking(
        methods[0], rows, [], models, features, digests, extractors, (num_classes, weights)
    )
    _warn(ranking, x, labels, batch_size)
    if verbose:
        print(ranking.table())
    return ranking


def _check_method(method):
    if method == "all":
        return list(METHODS)
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(METHODS)} or 'all'. Received: method={method!r}"
        )
    return [method]


def _candidates(backbones, num_classes, weights):
    """`(name, model or None, built_here)` per candidate; names must be unique."""
    if isinstance(backbones, (str, keras.Model)) or not backbones:
        raise ValueError(
            "`backbones` must be a non-empty list of registry names or built models. "
            f"Received: backbones={backbones!r}"
        )
    found, names = [], set()
    for candidate in backbones:
        if isinstance(candidate, str):
            from tltk.backbones import get_backbone

            name, model = get_backbone(candidate).name, None  # a clear error for unknown names
        elif isinstance(candidate, TransferModel):
            if cut_layer(candidate) is None and candidate.features is None:
                raise ValueError(
                    f"Model {candidate.name!r} has no pooled features layer to rank; build it "
                    "with tltk.build_classifier or tltk.build_text_classifier."
                )
            name, model = candidate.name, candidate
        else:
            raise ValueError(
                "Each candidate must be a registry name or a model built by tltk. "
                f"Received: {candidate!r}"
            )
        if name in names:
            raise ValueError(
                f"Two candidates are named {name!r}: give built models distinct names "
                "(`build_classifier(..., name=...)`)."
            )
        names.add(name)
        found.append((name, model, model is None))
    return found


def _build(name, num_classes, weights):
    from tltk.builders import build_classifier

    kwargs = {} if weights is None else {"weights": weights}
    return build_classifier(name, num_classes, **kwargs)


def _source_probabilities(model, x, batch_size, built_here):
    """A built candidate's softmax outputs (its source classifier), else `None`."""
    if built_here:
        return None  # its head was just made: no source classes
    if len(model.heads) != 1 or output_activation(model) != "softmax" or model.output_shape[-1] < 2:
        return None
    return pooled_features(model, x, batch_size, 0, output=output_layer(model))


def _warn(ranking, x, labels, batch_size):
    """Warns when even the best candidate is close to chance or no better than random weights."""
    best = ranking.best
    if not math.isfinite(best.score):
        return
    said = []
    method = ranking.method
    if method in ACCURACY_METHODS:
        chance = float(np.bincount(labels).max() / len(labels))
        if best.score - chance < NEAR_CHANCE * (1 - chance):
            said.append(
                f"the best candidate, {best.name}, scores {best.score:.3f} by {method}, close to "
                f"chance ({chance:.3f})"
            )
    if method != "leep":
        random_copy = _random_copy(ranking.model(best.name))
        if random_copy is not None:
            pooled = pooled_features(random_copy, x, batch_size, 0)
            random_score = transferability.SCORES[method](pooled, labels)
            if random_score >= best.score:
                said.append(
                    f"the best candidate, {best.name}, scores {best.score:.4g} by {method}, no "
                    f"better than a random-initialised copy of itself ({random_score:.4g})"
                )
    for line in said:
        message = (
            f"{line}: the data may be too far from every candidate's pretraining. Try other "
            "backbones, or compare with training from scratch."
        )
        ranking.warnings.append(message)
        warnings.warn(message, stacklevel=3)


def _random_copy(model):
    """The candidate's architecture with freshly initialised weights, or `None` where cloning
    does not re-initialise it (a TF Hub module loads its own weights) or fails."""
    try:
        copy = keras.models.clone_model(model)
    except Exception:  # noqa: BLE001 - custom layers may not clone; the comparison is skipped
        return None
    fresh = any(
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(copy.backbone.weights, model.backbone.weights)
    )
    return copy if fresh else None
