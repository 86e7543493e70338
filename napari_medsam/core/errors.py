"""Exceptions whose messages a clinician can act on."""


class MedSAMError(Exception):
    """Base class for every error the core raises on purpose."""


class InputError(MedSAMError, ValueError):
    """The image, volume or prompt given is not usable (shape, NaNs, outside the image...)."""


class CheckpointError(MedSAMError, FileNotFoundError):
    """A model checkpoint is missing, corrupt or of an unknown kind."""


class NoImageError(MedSAMError, RuntimeError):
    """predict() was called before set_image()."""


class CancelledError(MedSAMError):
    """Long work was cancelled by the user; whatever was finished is kept."""
