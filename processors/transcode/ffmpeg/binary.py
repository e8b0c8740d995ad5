"""Where the ffmpeg executable is."""

from __future__ import annotations

import functools

import imageio_ffmpeg


@functools.cache
def ffmpeg_binary() -> str:
    """Path of imageio-ffmpeg's bundled ffmpeg (or of $IMAGEIO_FFMPEG_EXE when that is set).

    The same binary runs locally and in production, so encoder behaviour does not depend on the host.
    """
    return imageio_ffmpeg.get_ffmpeg_exe()
