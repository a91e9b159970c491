"""The errors of a certification campaign (all :class:`RunError`, a ``ValueError``: bad input)."""
from __future__ import annotations


class RunError(ValueError):
    """A certification run cannot proceed: bad profiles or agents, or an unusable output directory."""


class ProfileError(RunError):
    """A profiles file or array has the wrong shape, non-finite values, or values outside the support."""


class ManifestError(RunError):
    """The output directory belongs to a different run (checkpoint, setting, seed, ...)."""


class ResultsError(RunError):
    """``results.jsonl`` is corrupt somewhere other than a torn last line."""
