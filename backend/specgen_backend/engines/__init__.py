"""Generation engines other than the native one (``scheduler.py``): each offers the scheduler's
interface (``submit``, ``call``, ``wake``, ``queue_depth``, ``batch_size``, ``running_adapters``,
``stop``) and an adapter bank's (``loaded``, ``load``, ``unload``, ``stamp``), so the server's
protocol, users, adapter ownership, metrics and personalization stay the same whichever runs.

``vllm_*``: generation through a ``vllm serve`` OpenAI-compatible server (docs/serving.md says why
a server and not an in-process engine).
"""

__all__: list[str] = []
