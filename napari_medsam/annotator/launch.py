"""Open napari with the MedSAM widget docked: the README's and `napari-medsam demo`'s window."""

from __future__ import annotations


def launch(path: str | None = None, viewer=None, block: bool = True):
    """Open napari with the MedSAM widget docked and `path` (default: the sample CT) loaded.

    Args:
        path: an image, volume or DICOM folder; None opens the bundled sample CT.
        viewer: an existing viewer to use instead of a new window.
        block: run the Qt event loop until the window closes.

    Returns:
        (viewer, widget).
    """
    import napari

    from ..core.runtime import RuntimeSpec, load_torch

    model = load_torch(RuntimeSpec())  # before the canvas loads OpenGL: see llvm_guard
    viewer = viewer if viewer is not None else napari.Viewer(title="napari-medsam")
    if path is None:
        viewer.open_sample("napari-medsam", "ct")
    else:
        from .reader import napari_get_reader

        viewer.open(path, plugin="napari-medsam" if napari_get_reader(str(path)) else None)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medsam", "MedSAM annotation")
    widget.engine.use(model, widget.spec())
    if block:
        napari.run()
    return viewer, widget
