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


class MissingDependency(MedSAMError, ImportError):
    """An optional part (PyTorch, napari, dask) is needed and not installed."""


def require_torch(what: str) -> None:
    """Raise MissingDependency, saying how to install it, when PyTorch is not installed.

    The light install (`pip install napari-medsam`) runs the built-in model with onnxruntime;
    training, other checkpoints and the GPU path need `pip install 'napari-medsam[torch]'`.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise MissingDependency(
            f"{what} needs PyTorch, which this install of napari-medsam leaves out (it runs the "
            "built-in model with ONNX Runtime). Install it with: pip install 'napari-medsam[torch]'"
        )


class OutputError(MedSAMError, OSError):
    """A result could not be written (disk full, no permission, a file where a folder should
    be); the previous file, if any, is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())
