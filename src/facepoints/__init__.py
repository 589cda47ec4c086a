"""facepoints: facial landmark detection, from annotated photos to a deployed model.

    import facepoints
    predictor = facepoints.load()           # the bundled model
    faces = predictor.predict(image_rgb)    # [{"box", "score", "landmarks"}, ...]
"""

import os

# Albumentations checks PyPI for a newer version on import; we run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"


def load(model=None, detector: str = "yunet", device: str = "cpu", **kw):
    """A ready ``Predictor``: the bundled default model unless ``model`` is given (a model
    file, or a bundled model by name: "default", "fast")."""
    from facepoints.deploy.predictor import Predictor

    return Predictor.from_file(model, detector=detector, device=device, **kw)


__all__ = ["load", "__version__"]
