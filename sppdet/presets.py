"""Named test-time settings that trade accuracy for speed (``--preset`` of detect and eval).

A preset changes how a trained model is run, never the model: which proposal method and how
many boxes, which of the model's scales get a conv pass, and the precision of the fc layers. ``model`` keeps the model's
own settings. Speeds and development-split mAP of each preset: README "Speed" and
docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sppdet.defaults import SINGLE_SCALE
from sppdet.errors import ArgumentError


@dataclass(frozen=True)
class Preset:
    """Test-time overrides: proposal ``method`` with at most ``max_boxes`` boxes, the conv
    ``scales`` (each must be one of the model's training scales), and the ``precision`` of the
    layers after the conv (``sppdet.device.PRECISIONS``; bfloat16 only where native)."""

    name: str
    description: str
    method: str | None = None
    max_boxes: int | None = None
    scales: tuple[int, ...] | None = None
    precision: str = "float32"


# The preset of `--preset` when none is named, and of ``preset=None``: the model as trained.
DEFAULT_PRESET = "model"

PRESETS: dict[str, Preset] = {
    "model": Preset("model", "the model's own settings (its proposal method, all its scales)"),
    "fast": Preset("fast", "EdgeBoxes, 1,000 boxes, one conv pass at scale 688, fc layers in "
                           "bfloat16 where native",
                   method="edgeboxes", max_boxes=1000, scales=SINGLE_SCALE, precision="bfloat16"),
}


def get_preset(name: str | None) -> Preset:
    """The preset called ``name`` (None: ``DEFAULT_PRESET``); ArgumentError naming the choices."""
    if name is None:
        return PRESETS[DEFAULT_PRESET]
    if name not in PRESETS:
        raise ArgumentError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(config: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """A model's config.json with the preset's scales (checked against the model's)."""
    if preset.scales is None:
        return config
    trained = [int(s) for s in config.get("scales", [])]
    missing = [s for s in preset.scales if s not in trained]
    if missing:
        # A scale the model never saw would give features of another size distribution.
        raise ArgumentError(f"preset {preset.name!r} runs scale(s) {missing}, which the model was "
                            f"not trained at (its scales: {trained}); use --preset model")
    return {**config, "scales": list(preset.scales)}
