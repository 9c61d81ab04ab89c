"""Typed errors raised at the engine's edges.  Each message names the problem and the fix."""

from __future__ import annotations


class LimelightError(Exception):
    """Base of every error limelight raises on purpose."""


class CheckpointError(LimelightError, ValueError):
    """A model file or folder is missing, truncated, corrupt or of an unknown kind."""


class ModelNotFoundError(LimelightError, LookupError):
    """A model name is neither a packaged model nor an existing path."""


class RequestError(LimelightError, ValueError):
    """A request cannot be served: bad sampling parameters, a prompt too long, ..."""
