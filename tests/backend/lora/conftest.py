"""Run the Triton kernels in Triton's interpreter when there is no GPU.

``TRITON_INTERPRET`` is read when a kernel is decorated, i.e. when ``specgen_backend.lora.kernels``
is first imported, so it is set here, before any test module imports it.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
