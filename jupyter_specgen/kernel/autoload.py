"""Load the kernel extension into the Python kernels that this Jupyter server starts.

The server's kernel manager builds each kernel's command line from its kernel spec, which it
gets from the server's kernel spec manager. ``install`` wraps that manager's ``get_kernel_spec``
so that the specs of ipykernel kernels come back with one more argument,
``--InteractiveShellApp.extra_extensions=jupyter_specgen.kernel`` (IPython's option for
"extensions a launcher adds": it leaves the user's own ``extensions`` alone). Kernels of other
languages, and kernels started elsewhere (``jupyter console``), are not touched. Nothing is
written to disk, and the spec the server lists keeps working for any kernel.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

__all__ = ["KERNEL_EXTENSION", "EXTENSION_ARGUMENT", "is_ipykernel", "with_extension", "install"]

log = logging.getLogger(__name__)

KERNEL_EXTENSION = "jupyter_specgen.kernel"
EXTENSION_ARGUMENT = f"--InteractiveShellApp.extra_extensions={KERNEL_EXTENSION}"


def is_ipykernel(argv: list[str]) -> bool:
    """Whether a kernel command line starts ipykernel (``-m ipykernel_launcher`` or ``-m ipykernel``)."""
    return any(a in ("ipykernel_launcher", "ipykernel") for a in argv) or any(
        a.endswith("ipykernel_launcher.py") for a in argv
    )


def with_extension(spec: Any) -> Any:
    """A copy of kernel spec ``spec`` whose argv loads the extension (``spec`` itself if not ipykernel)."""
    argv = list(getattr(spec, "argv", None) or [])
    if not is_ipykernel(argv) or EXTENSION_ARGUMENT in argv:
        return spec
    patched = copy.copy(spec)
    patched.argv = argv + [EXTENSION_ARGUMENT]
    return patched


def install(kernel_spec_manager: Any) -> None:
    """Make ``kernel_spec_manager`` hand out specs that load the extension. Idempotent.

    Call once at server start, before kernels start:
    ``autoload.install(serverapp.kernel_spec_manager)`` (the server's ``MappingKernelManager``
    passes that same object to each ``KernelManager`` it creates).
    """
    original = kernel_spec_manager.get_kernel_spec
    if getattr(original, "_specgen_autoload", False):
        return

    @functools.wraps(original)
    def get_kernel_spec(kernel_name: str, *args: Any, **kwargs: Any) -> Any:
        return with_extension(original(kernel_name, *args, **kwargs))

    get_kernel_spec._specgen_autoload = True  # type: ignore[attr-defined]
    kernel_spec_manager.get_kernel_spec = get_kernel_spec
    log.debug("jupyter_specgen: ipykernel kernels will load %s", KERNEL_EXTENSION)
