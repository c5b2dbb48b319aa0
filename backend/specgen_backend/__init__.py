"""specgen_backend: the model server of jupyter-specgen.

Runs without Jupyter: a websocket server (``server``) in front of a causal language model
(``engine``), speaking the protocol of ``protocol``.
"""

__all__: list[str] = []
