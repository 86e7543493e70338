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


class OutputError(MedSAMError, OSError):
    """A result could not be written (disk full, no permission, a file where a folder should
    be); the previous file, if any, is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())
