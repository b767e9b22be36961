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
    """Base class: the CLI prints ``str(error)`` on one line and exits with ``exit_code``; a subclass names its code
    in its header (``class X(MedprobeError, exit_code=EXIT_INPUT)``) or inherits its base's."""

    exit_code: int = EXIT_FAILURE

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class InvalidInputError(MedprobeError, exit_code=EXIT_INPUT):
    """User input (options, files, labels, features) cannot be used as given."""


class NotFoundError(MedprobeError, exit_code=EXIT_INPUT):
    """A named thing (feature set, layer, dataset, task, run, ...) does not exist."""


class ReadOnlySQLError(MedprobeError, exit_code=EXIT_INPUT):
    """A statement passed to the read-only SQL interface would write."""


class StoreFormatError(MedprobeError, exit_code=EXIT_STORE):
    """The store was written by a newer (or unknown) format version."""


class CorruptDataError(MedprobeError, exit_code=EXIT_STORE):
    """Stored data is missing, truncated or fails its checksum."""


class StoreWriteError(MedprobeError, exit_code=EXIT_STORE):
    """The store could not be written (full disk, permissions); names the store, nothing was committed."""


class ModelError(InvalidInputError, exit_code=EXIT_MODEL):
    """A model cannot be loaded or run as asked (unknown spec, missing weights, unsupported family)."""


class ModelNotFoundError(ModelError, NotFoundError, exit_code=EXIT_MODEL):
    """A model spec names no local checkpoint and no model that can be fetched."""


class StoreWarning(UserWarning):
    """Something in the store deserves attention but does not stop the work (an unreadable fragment, a search index
    that failed its checksum and was rebuilt). The CLI shows it as one line on stderr."""
