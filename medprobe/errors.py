"""Exceptions that carry a message fit to show a user as one line, and the exit code of each kind.

Exit codes (the README lists them): 1 any other failure, 2 usage (an unknown option or a bad value, from the
command line parser), 3 bad input data (options, files, labels, a name that does not exist), 4 a store error
(unreadable, corrupt, unwritable or newer store), 5 a model error (cannot be loaded or run), 130 interrupted.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_STORE = 4
EXIT_MODEL = 5
EXIT_INTERRUPTED = 130


class MedprobeError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits with ``exit_code``."""

    exit_code: int = EXIT_FAILURE


class InvalidInputError(MedprobeError):
    """User input (options, files, labels, features) cannot be used as given."""

    exit_code = EXIT_INPUT


class NotFoundError(MedprobeError):
    """A named thing (feature set, layer, dataset, task, run, ...) does not exist."""

    exit_code = EXIT_INPUT


class ReadOnlySQLError(MedprobeError):
    """A statement passed to the read-only SQL interface would write."""

    exit_code = EXIT_INPUT


class StoreFormatError(MedprobeError):
    """The store was written by a newer (or unknown) format version."""

    exit_code = EXIT_STORE


class CorruptDataError(MedprobeError):
    """Stored data is missing, truncated or fails its checksum."""

    exit_code = EXIT_STORE


class StoreWriteError(MedprobeError):
    """The store could not be written (full disk, permissions); names the store, nothing was committed."""

    exit_code = EXIT_STORE


class ModelError(InvalidInputError):
    """A model cannot be loaded or run as asked (unknown spec, missing weights, unsupported family)."""

    exit_code = EXIT_MODEL


class ModelNotFoundError(ModelError, NotFoundError):
    """A model spec names no local checkpoint and no model that can be fetched."""

    exit_code = EXIT_MODEL
