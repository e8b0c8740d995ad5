"""ffmpeg for the transcoder: the binary, probing with PyAV, the ladder and the pure argv builders."""
