"""Errors that mean "bad input": the CLI turns them into exit code 2 and a one-line reason."""


class InputError(Exception):
    """The user gave us something we cannot use (missing file, wrong format, no faces...)."""


class VideoError(InputError):
    """A video could not be opened, read or written."""


class FaceSetError(InputError):
    """A face-set .npz is missing, malformed or holds the wrong kind of data."""


class DetectorError(RuntimeError):
    """The Haar cascade could not be loaded (OpenCV without cascades, e.g. OpenCV 5)."""
