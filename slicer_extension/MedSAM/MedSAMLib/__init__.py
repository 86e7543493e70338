"""Helpers of the MedSAM Slicer module: GUI-free Logic, geometry, MRML <-> numpy, jobs, the
Segment Editor effect and first-use installation of napari-medsam.

Nothing is imported here so that `import MedSAMLib.<module>` stays cheap and works before
napari-medsam is installed.
"""
