"""User-facing errors: each names the problem and the fix; the CLI prints them without a traceback."""

from __future__ import annotations


class GsgError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class ConfigError(GsgError):
    """Unknown or invalid configuration."""


class DataError(GsgError):
    """Missing, unreadable or unsuitable data."""


class CheckpointError(GsgError):
    """A checkpoint that is missing, corrupt, untrusted or does not fit the model."""


class TrainingDiverged(GsgError):
    """The loss became NaN or infinite."""
