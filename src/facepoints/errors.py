"""One error hierarchy for everything a user can get wrong or a file can hold wrong.

Every error facepoints raises on purpose derives from :class:`FacepointsError`, which
carries the exit code the CLI ends with and the HTTP status the service answers with;
the CLI and the service catch this root (never a bare ``ValueError``), print its one-line
message, and show no traceback. The concrete classes keep ``ValueError`` (or
``RuntimeError``) as a second base, so code written against those still catches them.

========================  =========  ====  ===================================================
class                     exit code  HTTP  raised for
========================  =========  ====  ===================================================
FacepointsError               2      400   (the root)
UsageError                    2      400   an argument or option that cannot work
AnnotationError (data)        2      422   a malformed annotation file (names file and line)
ImageError (data)             1      400   an image that cannot be read
ModelFileError (models)       2      500   a model file that is missing, foreign or damaged
ConfigError (training)        2      400   a training config that does not validate
TrainingError (training)      1      500   a run that cannot go on (diverged, folder locked)
TooLargeError                 2      413   an input over a documented limit
========================  =========  ====  ===================================================
"""

from __future__ import annotations


class FacepointsError(Exception):
    """The root: a message meant for the user, an exit code and an HTTP status."""

    exit_code = 2
    http_status = 400


class UsageError(FacepointsError, ValueError):
    """An argument or option that cannot work (a typo in a model name, a bad range)."""


class TrainingError(FacepointsError, RuntimeError):
    """A training run that cannot go on: a non-finite loss, an output folder in use."""

    exit_code = 1
    http_status = 500


class TooLargeError(FacepointsError, ValueError):
    """An input beyond a documented limit (upload size, megapixels, faces per image)."""

    http_status = 413


class OutputError(FacepointsError, ValueError):
    """An output that would overwrite an input, write through a symbolic link, or could
    not be written (a read-only folder, a full disk)."""


class MissingDependency(FacepointsError, ImportError):
    """An optional package a chosen feature needs is not installed (the message says
    which and how to install it)."""
