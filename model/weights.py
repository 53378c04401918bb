"""A trained model's weights: read out as float32 arrays (what the NumPy serving forms
are exported from), copied into a challenger (warm start), checked finite (the gate).

Warm start: the trainer seeds its id maps with the champion's and only appends new users and items,
so row i of every embedding table means the same user or item in both models. Weights of
equal shape are copied; an embedding table that grew gets the champion's rows as its
prefix and keeps fresh initial values for the new rows; anything else (another
architecture: a wider layer is not a grown table) keeps its initial values and is reported.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

log = logging.getLogger("streamrec.train")


def layer_arrays(layer: keras.layers.Layer) -> list[np.ndarray]:
    """A layer's weights as float32 NumPy arrays, in the layer's own order."""
    return [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]


def copy_weights(dst: keras.Model, src: keras.Model) -> list[str]:
    """Copy ``src``'s weights into ``dst`` (both built); returns the paths not copied.

    Weights pair up by their path inside the model (layers are named), so a champion from
    before a layer was added (e.g. the event-type embedding) still hands over every weight
    the two share, and two models with as many weights in another order or structure
    never swap weights of equal shape."""
    theirs = {_local(w.path, src): w for w in src.weights}
    pairs = [(w, theirs.get(_local(w.path, dst))) for w in dst.weights]
    skipped = []
    for new, old in pairs:
        if old is None or not _assign(new, keras.ops.convert_to_numpy(old)):
            skipped.append(new.path)
    if skipped:
        log.warning("warm start: %d of %d weights keep their initial values (no weight of "
                    "that path and shape in %s): %s", len(skipped), len(pairs), src.name,
                    ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    return skipped


def _local(path: str, model: keras.Model) -> str:
    """A weight's path without the model's own (auto-numbered) name, which a model built
    here puts first and one loaded from a ``.keras`` file leaves out."""
    return path.removeprefix(f"{model.name}/")


def _assign(new: Any, old_value: np.ndarray) -> bool:
    """Equal shapes copy; a grown embedding table takes the old rows as its prefix."""
    if tuple(new.shape) == old_value.shape:
        new.assign(old_value)
        return True
    if (new.name == "embeddings" and new.shape[0] >= old_value.shape[0]
            and tuple(new.shape[1:]) == old_value.shape[1:]):
        value = keras.ops.convert_to_numpy(new).copy()
        value[:old_value.shape[0]] = old_value
        new.assign(value)
        return True
    return False


def all_finite(model: keras.Model) -> bool:
    """False when any weight is NaN or infinite (a diverged run must never be promoted)."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
