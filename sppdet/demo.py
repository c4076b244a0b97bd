"""Sample photographs for the demo: scikit-image's bundled images (nothing is shipped here)."""

from __future__ import annotations

from pathlib import Path

from sppdet.errors import SppdetError

# name -> (loader in skimage.data, what it shows)
SAMPLES = {
    "chelsea": ("chelsea", "a cat"),
    "astronaut": ("astronaut", "a person"),
    "motorcycle": ("stereo_motorcycle", "a motorbike"),
}


def write_samples(folder: Path) -> list[Path]:
    """Write scikit-image's sample photographs as JPEG files into ``folder``."""
    try:
        import skimage.data
    except ImportError:
        raise SppdetError("the demo needs scikit-image: pip install 'sppdet[demo]'") from None
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (loader, _) in SAMPLES.items():
        image = getattr(skimage.data, loader)()
        if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
            image = image[0]
        path = folder / f"{name}.jpg"
        if not cv2.imwrite(str(path), cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)):
            raise SppdetError(f"{path}: cannot write image")
        paths.append(path)
    return paths
