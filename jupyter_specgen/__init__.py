"""jupyter-specgen: inline code completion grounded in the live kernel.

This module holds only the entry points Jupyter looks for.
"""

try:
    from ._version import __version__
except ImportError:  # running from a source tree that was never built
    __version__ = "dev"

__all__ = ["__version__"]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-specgen"}]


def _jupyter_server_extension_points():
    from .extension import SpecgenExtension

    return [{"module": "jupyter_specgen", "app": SpecgenExtension}]
