"""rating-edge: the RATING synovitis scorer, made fast enough for the ultrasound machine."""

__version__ = "0.1.0"

from rating_edge.errors import RatingEdgeError  # noqa: E402,F401
