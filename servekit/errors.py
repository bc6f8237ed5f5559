"""Exceptions raised by servekit. Every message says what to do next."""

from __future__ import annotations


class ServekitError(Exception):
    """Base class of every servekit error."""


class EngineNotInstalled(ServekitError):
    """The engine's program or Python package is missing; the message names the install step."""


class UnknownEngine(ServekitError):
    """No engine is registered under that name."""


class InvalidSpec(ServekitError):
    """The requested server cannot be built from these options."""


class ModelNotFound(ServekitError):
    """The model name or path does not point at something the engine can load."""


class PortInUse(ServekitError):
    """The requested port is already taken by another process."""


class NameTaken(InvalidSpec):
    """Another live server already has this name."""


class StateDirError(ServekitError):
    """servekit cannot read or write its state directory (records, logs)."""


class ServerCrashed(ServekitError):
    """The server's process ended without being stopped; its record stays until it is stopped."""


class KeyRejected(ServekitError):
    """The server answered 401: the request did not carry the API key the server expects."""


class ServerStartError(ServekitError):
    """The server process died or never became ready; the message holds its last log lines."""


class ServerNotFound(ServekitError):
    """No running server matches the given name."""


class BuildError(ServekitError):
    """Building or installing an engine failed."""


class EngineRequestError(ServekitError):
    """The server answered an engine API call (LoRA, …) with an error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class InvalidBenchmark(ServekitError):
    """A load-generator run (``servekit.bench``) was asked for something it cannot do."""
