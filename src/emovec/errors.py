"""Errors a person can act on: each message names the problem and the fix; the CLI prints it on one line."""

from __future__ import annotations


class EmovecError(Exception):
    """Base class: the CLI turns any EmovecError into one line on stderr and exit code 2.

    `param` names the library parameter at fault (e.g. `temperature`), in library words; a front end
    (the CLI, the web app) maps it to its own name for that setting (e.g. `--temperature`).
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ConfigError(EmovecError):
    """An option or config value is invalid."""


class CorpusError(EmovecError):
    """A corpus file is malformed; messages start with `file:line:`."""


class UnknownEmotionError(EmovecError):
    """An emotion name is not in the concept list (or not in an artifact)."""


class ModelLoadError(EmovecError):
    """A model could not be located, verified or loaded."""


class ArtifactError(EmovecError):
    """An artifact directory is missing, malformed or fails its checksum."""


class IncompatibleModelError(EmovecError):
    """Vectors were made for a model of a different shape."""


class LockedError(EmovecError):
    """Another emovec process holds the lock of a directory this run needs."""
