"""Which decoder answers a prompt: the active adapter's, its fallback's, or the base model's.

One pure rule, used by the torch backend (`adapters.Adapters.routed`) and the ONNX backend
(`backends.onnx_backend.OnnxBackend`), so both always pick the same weights, multimask included:
  * no decoder adapter: the base model;
  * an adapter whose domain gate refuses the image: its fallback (the adapter it was initialised
    from, e.g. the click adapter) or, without one, the base model;
  * box-only prompts on an adapter that leaves boxes to the base model (the click adapter,
    `"box_prompts": "base"`): the base model.
"""

from __future__ import annotations

from dataclasses import dataclass

ADAPTER, FALLBACK, BASE = "adapter", "fallback", "base"


@dataclass(frozen=True)
class Route:
    """What decides the decoder for one model setting (read from adapter metadata).

    Attributes:
        adapter: a decoder adapter is active.
        box_base: the active adapter leaves box-only prompts to the base model.
        gated: the active adapter has a domain gate, and the gate is switched on.
        fallback: a fallback adapter decodes gate-refused images (else the base model does).
        fallback_box_base: that fallback leaves box-only prompts to the base model.
    """

    adapter: bool = False
    box_base: bool = False
    gated: bool = False
    fallback: bool = False
    fallback_box_base: bool = False

    def decoders(self) -> set[str]:
        """Every decoder this route can choose (what a backend must have ready)."""
        out = {ADAPTER} if self.adapter else {BASE}
        if self.adapter and self.box_base:
            out.add(BASE)
        if self.adapter and self.gated:
            out.add(FALLBACK if self.fallback else BASE)
            if self.fallback and self.fallback_box_base:
                out.add(BASE)
        return out


def choose_decoder(route: Route, has_points: bool, gate_accepts: bool | None = None) -> str:
    """ADAPTER, FALLBACK or BASE for one decode.

    Args:
        route: the model setting.
        has_points: the prompt has clicks (else it is box-only).
        gate_accepts: the domain gate's verdict on this image (None: no gate was asked).
    """
    if not route.adapter:
        return BASE
    if route.gated and gate_accepts is False:
        if not route.fallback:
            return BASE
        return BASE if (not has_points and route.fallback_box_base) else FALLBACK
    return BASE if (not has_points and route.box_base) else ADAPTER
