"""Exceptions that carry a message fit to show a user as one line."""

from __future__ import annotations


class MedprobeError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""

    exit_code: int = 1


class StoreFormatError(MedprobeError):
    """The store was written by a newer (or unknown) format version."""


class NotFoundError(MedprobeError):
    """A named thing (feature set, layer, dataset, task, run, ...) does not exist."""


class ReadOnlySQLError(MedprobeError):
    """A statement passed to the read-only SQL interface would write."""


class CorruptDataError(MedprobeError):
    """Stored data is missing, truncated or fails its checksum."""


class InvalidInputError(MedprobeError):
    """User input (options, files, labels, features) cannot be used as given."""


class StoreWriteError(MedprobeError):
    """The store could not be written (full disk, permissions); names the store, nothing was committed."""
