"""One error hierarchy; the CLI maps each class to one stderr line and an exit code."""

from __future__ import annotations


class SegdeployError(Exception):
    """Base class for every error segdeploy reports to a user."""

    exit_code = 1


class BadInputError(SegdeployError):
    """The user asked for something invalid: a missing file, a wrong option, a foreign checkpoint."""

    exit_code = 2


class CheckFailedError(SegdeployError):
    """A numeric or structural check ran and failed."""

    exit_code = 1


class MissingDependencyError(BadInputError):
    """An optional backend (TensorRT, a GPU, the official exporter) is not available here."""
