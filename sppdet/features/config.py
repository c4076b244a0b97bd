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

from sppdet import schema
from sppdet.errors import ConfigMismatchError, DataError
from sppdet.features.spp import DEFAULT_LEVELS

# The keys, in the order they are recorded.
FEATURE_KEYS = ("backbone", "weights", "layer", "channels", "stride", "offset", "scales", "max_size",
                "levels")

# A recorded weights identifier: random (with its seed), a torchvision weights name, or a
# file's name and digest (``sppdet extract --weights FILE``). Never a path: a model or a
# cache does not name files to read (the weights file is given again with --weights).
WEIGHTS_PATTERN = r"random(\(seed=\d+\))?|none|[A-Za-z][A-Za-z0-9_]*|file:[^/\\]+#sha256:[0-9a-f]{1,64}"
WEIGHTS_DESCRIPTION = ("random, a torchvision weights name or file:NAME#sha256:DIGEST "
                       "(never a path)")


def _registered_backbone(value: Any) -> None:
    from sppdet.features.backbones import backbone_names

    schema.text(choices=backbone_names())(value)


def feature_fields(required: bool = True, registered_backbone: bool = True) -> dict[str, schema.Key]:
    """Declarative checks of the feature settings (``sppdet.schema``), in a model's
    config.json (top level) and a feature cache's manifest (``config``; ``levels`` beside it
    there). ``required``: every key but ``levels`` must be present; ``registered_backbone``:
    the backbone must be one of ``features.backbones`` (what detection needs; training also
    runs on synthetic features of other names)."""
    return {
        "backbone": schema.Key(_registered_backbone if registered_backbone else schema.text(), required),
        "weights": schema.Key(schema.text(pattern=WEIGHTS_PATTERN, describe=WEIGHTS_DESCRIPTION), required),
        "layer": schema.Key(schema.text(), required),
        "channels": schema.Key(schema.integer(1), required),
        "stride": schema.Key(schema.integer(1), required),
        "offset": schema.Key(schema.number(), required),
        "scales": schema.Key(schema.list_of(schema.integer(1, 100_000), min_len=1, unique=True), required),
        "max_size": schema.Key(schema.integer(1), required),
        "levels": schema.Key(schema.list_of(schema.integer(1, 1000), min_len=1, unique=True), False),
    }


FEATURE_FIELDS = feature_fields()

# The proposal method's settings recorded with a cache or a model (meta.json's ``method``
# and ``params``): the common options' and the built-in methods' own types and ranges;
# other entries (descriptions) must be plain values.
PROPOSAL_PARAM_FIELDS: dict[str, schema.Key] = {
    name: schema.Key(check, required=False) for name, check in {
        "max_boxes": schema.integer(1), "min_side": schema.number(lo=0), "dedupe": schema.boolean(),
        "max_side": schema.integer(0), "base_k": schema.integer(1), "inc_k": schema.integer(1),
        "sigma": schema.number(lo=0), "seed": schema.integer(), "alpha": schema.number(0, 1),
        "beta": schema.number(0, 1), "min_score": schema.number(lo=0), "mode": schema.text(),
    }.items()
}
PROPOSALS_FIELDS: dict[str, schema.Key] = {
    "method": schema.Key(schema.text(), required=False),  # default ss-fast
    "params": schema.Key(schema.mapping(PROPOSAL_PARAM_FIELDS, values=schema.scalar()), required=False),
    "format": schema.Key(schema.integer(1), required=False),
}


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
            InvalidValueError (a DataError): a key is missing or has a value of the wrong
                type or range (``where`` and the key named; ``FEATURE_FIELDS``).
        """
        schema.validate(config, FEATURE_FIELDS, where)
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
