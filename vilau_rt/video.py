"""Video input: a file (decoded with PyAV, the ``[video]`` extra) or a list of frames -> N
frames sampled uniformly, as upstream's ``num_video_frames`` (8) does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError
from .images import load_image


def sample_indices(total: int, n: int) -> list[int]:
    """n indices spread uniformly over [0, total) (all of them when total <= n)."""
    if total <= 0:
        raise ImageError("the video has no frames")
    if total <= n:
        return list(range(total))
    return [round(i) for i in np.linspace(0, total - 1, n)]


def load_video(video, num_frames: int = 8) -> list[Image.Image]:
    """A path or a list of frames (anything ``load_image`` takes) -> ``num_frames`` RGB frames."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if isinstance(video, (str, Path)):
        frames = _decode(Path(video))
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise ImageError(
            f"unsupported video type {type(video).__name__}: pass a file path or a list of frames"
        )
    return [load_image(frames[i]) for i in sample_indices(len(frames), num_frames)]


def _decode(path: Path) -> list[Image.Image]:
    if not path.is_file():
        raise ImageError(f"video file {path} not found")
    try:
        import av
    except ImportError as e:
        raise ImageError(
            "reading video files needs PyAV: pip install 'vilau-rt[video]' (or pass a list of "
            "frames)"
        ) from e
    try:
        with av.open(str(path)) as container:
            return [f.to_image() for f in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError, IndexError) as e:
        raise ImageError(f"cannot decode video {path}: {e}") from e
