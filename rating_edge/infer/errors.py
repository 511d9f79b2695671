"""Typed backend failures: the run loop decides whether the scanner feed goes on from the type of the
error, never from its message text.

- `EngineMismatch`: the package holds an engine or graph that cannot serve here as it is (built for another
  GPU or TensorRT version, outputs that are not the package's). Only the user can fix it (rebuild, re-export),
  so commands stop with the fix in the message.
- `EngineUnavailable`: the backend cannot run right now (library not installed, no GPU, server unreachable
  or too slow). The live feed fails open with an "AI unavailable" banner and retries where it makes sense.
"""
from rating_edge.errors import PackageError, RatingEdgeError


class EngineMismatch(PackageError):
    """An engine/graph in the package that cannot run on this machine or does not match the package."""


class EngineUnavailable(RatingEdgeError):
    """A backend that cannot start or answer now; the runtime shows the feed without AI and says why."""
