"""What a panel may ask of the dock widget: the small interface panels talk to (no private
attributes of the widget are touched from a panel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..core.runtime import RuntimeSpec
    from .annotation import Annotation
    from .engine import Engine
    from .workers import JobRunner


class Host(Protocol):
    """The dock widget, as its panels see it."""

    engine: Engine
    runner: JobRunner  # the dock's own progress bar and Cancel (embedding, volume work)

    def notify(self, level: str, text: str) -> None:
        """Show a message in plain words (napari notification and status line)."""

    def guard(self, fn, *args) -> Any:
        """Call fn; a MedSAMError becomes a message instead of an exception (returns None)."""

    def annotations(self) -> list[Annotation]:
        """Every image under annotation in the dock."""

    def annotation(self) -> Annotation:
        """The Annotation of the chosen image (made on first use); InputError without one."""

    def spec(self) -> RuntimeSpec:
        """The model setting chosen in the dock."""

    def request_embedding(self) -> None:
        """Embed the slice on screen (in the background) unless that runs already."""

    def object_id(self) -> int | None:
        """The id chosen for the next object ("next free" gives None); reset once used."""

    def objects_changed(self) -> None:
        """Labels were written (accept, automatic, propagation): refresh what depends on them."""

    def use_adapter(self, folder: str, label: str) -> None:
        """Select an adapter folder in the model settings and apply it."""
