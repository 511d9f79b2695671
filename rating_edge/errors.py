"""One exception type for every user-facing failure.

The CLI turns it into a one-line message and a non-zero exit, so a user never has to read a traceback
from deep inside torch or ONNX Runtime to learn that a file is wrong.
"""


class RatingEdgeError(Exception):
    """An error caused by the user's input (files, arrays, options) with a message that says what to do."""


class CheckpointError(RatingEdgeError):
    """A checkpoint folder or network file that does not match its manifest or the model."""


class PackageError(RatingEdgeError):
    """A model package that is incomplete, tampered with, or built for another machine."""


class CalibrationError(RatingEdgeError):
    """A calibration set that cannot be trusted to produce INT8 scales."""
