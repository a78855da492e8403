"""brainssl: self-supervised brain MRI foundation encoders as a reproducible workflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainssl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
