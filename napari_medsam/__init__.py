"""napari-medsam: Segment Anything for medical images in napari and 3D Slicer."""

__version__ = "0.1.0"
