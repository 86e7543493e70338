"""Qt-free core: model loading, predictor, embedding cache, sessions, IO and metrics.

Nothing here imports Qt, napari, Slicer or VTK, so both front ends (and scripts) can use it.
"""

from .errors import CancelledError, CheckpointError, InputError, MedSAMError, NoImageError

__all__ = ["CancelledError", "CheckpointError", "InputError", "MedSAMError", "NoImageError"]
