"""The one interface behind every proposal method, and the registry of methods.

A method is a callable ``method(image_bgr) -> Proposals`` with a ``name`` and a ``params``
dict. Subclasses implement only ``_propose`` (boxes and scores on the image they are given,
best first) and ``method_params``; the base class applies the common options (down-scaling
of large images, clipping, minimum side, duplicate removal, top-k) in one place.
Adding a method is one small subclass decorated with ``@register``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, TypeVar

import numpy as np

from proposals.errors import ProposalError
from proposals.postprocess import Proposals, downscale_image, finalize

__all__ = [
    "DEFAULT_METHOD",
    "CommonOptions",
    "ProposalMethod",
    "Proposals",
    "available_methods",
    "create_method",
    "create_method_from_params",
    "method_options",
    "register",
]

# The method `sppdet proposals` and ``sppdet.compute_proposals`` use when none is named, and
# the detector's when a model records none.
DEFAULT_METHOD = "ss-fast"


@dataclass(frozen=True)
class CommonOptions:
    """Options shared by every method (all recorded in the cache's meta.json).

    max_boxes: keep at most this many boxes, best first.
    min_side: drop boxes whose width or height (original pixels) is below this.
    dedupe: drop boxes equal to an earlier one after rounding to whole pixels.
    max_side: down-scale images whose longer side exceeds this before proposing, and scale
        the boxes back to original pixels; 0 disables down-scaling.
    """

    max_boxes: int = 2000
    min_side: float = 16.0
    dedupe: bool = True
    max_side: int = 1000

    def __post_init__(self) -> None:
        if self.max_boxes < 1:
            raise ProposalError(f"max_boxes must be >= 1, got {self.max_boxes}")
        if self.min_side < 0:
            raise ProposalError(f"min_side must be >= 0, got {self.min_side}")
        if self.max_side < 0:
            raise ProposalError(f"max_side must be >= 0 (0 = no down-scaling), got {self.max_side}")


class ProposalMethod(ABC):
    """Base class: ``method(image_bgr)`` returns the final proposals of one image."""

    name: str = ""  # the registered name, e.g. "ss-fast"; set by each subclass

    def __init__(self, common: CommonOptions | None = None) -> None:
        self.common = common or CommonOptions()

    @abstractmethod
    def _propose(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw boxes (N, 4) internal (x1, y1, x2, y2) in the pixels of ``image_bgr`` and
        scores (N,), higher is better, ordered best first."""

    @abstractmethod
    def method_params(self) -> dict[str, Any]:
        """The method's own parameters (JSON-serialisable)."""

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter that changes the output: the method's and the common options."""
        return {**self.method_params(), **asdict(self.common)}

    def __call__(self, image_bgr: np.ndarray) -> Proposals:
        image = _as_bgr(image_bgr)
        height, width = image.shape[:2]
        small, scale = downscale_image(image, self.common.max_side)
        boxes, scores = self._propose(small)
        return finalize(
            boxes,
            scores,
            scale=scale,
            width=width,
            height=height,
            min_side=self.common.min_side,
            dedupe=self.common.dedupe,
            max_boxes=self.common.max_boxes,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Check an image is HxWx3 uint8 (a grayscale HxW image is expanded to 3 channels)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ProposalError(f"expected a uint8 numpy image, got {type(image).__name__} "
                            f"{getattr(image, 'dtype', '')}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ProposalError(f"expected an HxWx3 BGR image, got shape {image.shape}")
    return np.ascontiguousarray(image)


_REGISTRY: dict[str, Callable[..., ProposalMethod]] = {}
M = TypeVar("M", bound=Callable[..., ProposalMethod])


def register(name: str) -> Callable[[M], M]:
    """Decorator: make a method class or factory available as ``create_method(name)``."""

    def deco(factory: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"proposal method {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_methods() -> list[str]:
    """Names accepted by ``create_method``."""
    _load_builtin_methods()
    return sorted(_REGISTRY)


def create_method(name: str, common: CommonOptions | None = None, **options: Any) -> ProposalMethod:
    """Build the method registered as ``name`` with the common and its own options."""
    _load_builtin_methods()
    if name not in _REGISTRY:
        raise ProposalError(f"unknown proposal method {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](common=common, **options)


def method_options(name: str) -> set[str]:
    """The names of the options of method ``name`` besides ``common`` (its factory's
    keyword arguments)."""
    import inspect

    _load_builtin_methods()
    if name not in _REGISTRY:
        raise ProposalError(f"unknown proposal method {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return set(inspect.signature(_REGISTRY[name]).parameters) - {"common"}


def create_method_from_params(name: str, params: dict[str, Any]) -> ProposalMethod:
    """Rebuild method ``name`` from the parameters a cache recorded (``ProposalCache.params``,
    ``method.params``): the common options and the method's own options among them; other
    recorded entries (descriptions such as ``order``) are ignored."""
    common_keys = {f.name for f in fields(CommonOptions)}
    common = CommonOptions(**{k: v for k, v in params.items() if k in common_keys})
    accepted = method_options(name)
    return create_method(name, common, **{k: v for k, v in params.items() if k in accepted})


def _load_builtin_methods() -> None:
    # Importing the modules runs their @register decorators.
    import proposals.edge_boxes  # noqa: F401
    import proposals.selective_search  # noqa: F401
