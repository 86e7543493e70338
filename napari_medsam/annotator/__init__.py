"""The napari front end: the MedSAM dock widget, its panels, and napari's reader, writer and
sample data. It translates layers and buttons into core `Session` calls and shows the masks;
no model math lives here.

    widget.py        the dock: images, settings, embedding, keyboard verbs (the `Host`)
    panel_*.py       one group box each: model, prompts, volume, automatic, fine-tune
    annotation.py    one image layer under annotation: its Session and helper layers
    host.py          what panels may ask of the dock (their only way in)
    workers.py       the one way work runs off the UI thread: progress bar and Cancel
    jobs.py, engine.py   that work, Qt-free: embedding, propagation, fine-tuning; the runtime
    reader.py, writer.py, sample_data.py, geometry.py   napari layers <-> core arrays
    launch.py, llvm_guard.py   opening napari with the dock; a crash guard for triton
"""
