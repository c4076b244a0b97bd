"""The feature configuration: everything pooled window features depend on.

One typed record, :class:`FeatureConfig`, read from and written as the plain JSON keys
that the feature cache manifest (``config`` plus ``levels``), the model directory's
config.json (top level) and the detector share; and one comparison,
:func:`differing_keys` / :func:`check_same`, that names the keys that differ.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from sppdet.errors import ConfigMismatchError, DataError
from sppdet.features.spp import DEFAULT_LEVELS

# The keys, in the order they are recorded.
FEATURE_KEYS = ("backbone", "weights", "layer", "channels", "stride", "offset", "scales", "max_size",
                "levels")


@dataclass(frozen=True)
class FeatureConfig:
    """What the conv maps and pooled features of a window depend on.

    Attributes:
        backbone: registered backbone name (``features.backbones``).
        weights: the backbone's weights (torchvision name, "random...", or "file:...").
        layer: where the trunk is cut, as the backbone describes it.
        channels, stride, offset: the cut layer's channels and window-mapping geometry.
        scales: shorter-side sizes of the image pyramid.
        max_size: cap on the longer side of a resized image.
        levels: spatial pyramid levels (n x n bins each).

    Frozen and hashable: models with equal configurations share one conv pass.
    """

    backbone: str
    weights: str
    layer: str
    channels: int
    stride: int
    offset: float
    scales: tuple[int, ...]
    max_size: int
    levels: tuple[int, ...] = DEFAULT_LEVELS

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], where: str = "feature settings") -> FeatureConfig:
        """Read the keys of ``FEATURE_KEYS`` from a manifest or a model config (other keys
        are ignored; ``levels`` defaults to ``DEFAULT_LEVELS``, as before it was recorded).

        Raises:
            DataError: a key is missing or has a value of the wrong kind (naming ``where``).
        """
        missing = [k for k in FEATURE_KEYS if k not in config and k != "levels"]
        if missing:
            raise DataError(f"{where}: feature settings lack {', '.join(missing)}")
        try:
            return cls(backbone=str(config["backbone"]), weights=str(config["weights"]),
                       layer=str(config["layer"]), channels=int(config["channels"]),
                       stride=int(config["stride"]), offset=float(config["offset"]),
                       scales=tuple(int(s) for s in config["scales"]),
                       max_size=int(config["max_size"]),
                       levels=tuple(int(n) for n in config.get("levels", DEFAULT_LEVELS)))
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: invalid feature settings ({e})") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists for the tuples), keys in ``FEATURE_KEYS`` order."""
        d = asdict(self)
        return {k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in FEATURE_KEYS}

    def differences(self, other: FeatureConfig) -> list[str]:
        """The names of the keys whose values differ from ``other``'s."""
        return differing_keys(self.to_dict(), other.to_dict())


def _plain(value: Any) -> Any:
    """JSON-equal form: tuples and lists compare alike, as after a round trip through JSON."""
    return json.loads(json.dumps(value))


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any],
                   keys: Sequence[str] | None = None) -> list[str]:
    """The keys (``keys``, default all keys of both) whose values differ, sorted; a key
    missing on one side differs from any value on the other."""
    names = sorted(set(a) | set(b)) if keys is None else list(keys)
    missing = object()
    return [k for k in names
            if (a.get(k, missing) is missing) != (b.get(k, missing) is missing)
            or _plain(a.get(k)) != _plain(b.get(k))]


def describe_differences(a: Mapping[str, Any], b: Mapping[str, Any], keys: Sequence[str],
                         labels: tuple[str, str] = ("", "vs")) -> str:
    """``"k: <a> vs <b>, ..."`` for the given keys (``labels`` name the two sides)."""
    first = f"{labels[0]} " if labels[0] else ""
    return ", ".join(f"{k}: {first}{a.get(k)!r} {labels[1]} {b.get(k)!r}" for k in keys)


def check_same(expected: Mapping[str, Any], found: Mapping[str, Any], where: str,
               keys: Sequence[str] | None = None) -> None:
    """Raise ConfigMismatchError ``"<where>: made with other features (k: a vs b, ...)"``
    when the two configurations differ in ``keys`` (default: any key)."""
    diff = differing_keys(expected, found, keys)
    if diff:
        raise ConfigMismatchError(
            f"{where}: made with other features ({describe_differences(expected, found, diff)})")
