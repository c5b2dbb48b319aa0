"""The kernel side of jupyter-specgen: live specs, forked validation, the execution log.

``%load_ext jupyter_specgen.kernel`` loads it by hand; kernels started by the Jupyter server get
it automatically (``autoload.py``). Importable with the standard library and IPython alone.
"""

from .extension import load_ipython_extension, unload_ipython_extension

__all__ = ["load_ipython_extension", "unload_ipython_extension"]
