"""The Jupyter server extension: configuration, start-up and shut-down.

By default it starts the model backend as a child process on loopback with a random token;
with ``SpecgenExtension.backend_url`` set it connects to a standalone backend instead (a shared
GPU host), with the token from ``backend_token`` or ``backend_token_file``. The child keeps the
users' adapters under ``adapter_root`` (a standalone backend: its own ``--adapter-root``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, List, Unicode, default

from .backend_client import BackendClient, BackendState
from .backend_process import BackendProcess
from .completions.pipeline import CompletionSettings
from .kernel import autoload
from .kernel_client import KernelLinks
from .personalize.feedback import FeedbackStore, default_feedback_path
from .personalize.service import PersonalizeService, PersonalizeSettings
from .protocol import Personalize, Status
from .routes import CompletionsWebSocket
from .routes_personalize import personalize_handlers
from .users import load_user_key

__all__ = ["SpecgenExtension", "SpecgenService"]

KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


class SpecgenService:
    """What the handlers share: the backend client, its child process, the open tabs, and
    personalization."""

    def __init__(
        self,
        *,
        client_factory,
        process: Optional[BackendProcess],
        kernels: Optional[KernelLinks],
        completion_settings: CompletionSettings,
        root_dir: str,
        feedback: FeedbackStore,
        personalize_settings: PersonalizeSettings,
        log,
        user_key: Optional[bytes] = None,
    ):
        self.process = process
        self.user_key = user_key if user_key is not None else load_user_key()  # keys the users' backend names
        self.kernels = kernels
        self.completion_settings = completion_settings
        self.log = log
        self._subscribers: set = set()
        self.client: BackendClient = client_factory(self._broadcast, self._on_job)
        self.personalize = PersonalizeService(client=self.client, root_dir=root_dir, kernels=kernels,
                                              feedback=feedback, settings=personalize_settings,
                                              push=self.send_to_user)
        self._feedback = feedback
        self._started = False

    def ensure_started(self) -> None:
        """Start the backend child and the connection to it, once.

        Called when the server's loop starts, and again by the first tab to connect (servers
        embedded in tests never run the start-up hook).
        """
        if self._started:
            return
        self._started = True
        if self.process is not None:
            self.process.start()
        self.client.start()

    async def stop(self) -> None:
        await self.personalize.close()
        await self.client.close()
        self._feedback.close()
        if self.kernels is not None:
            await self.kernels.close()
        if self.process is not None:
            await self.process.stop()

    def subscribe(self, handler) -> None:
        self._subscribers.add(handler)

    def unsubscribe(self, handler) -> None:
        self._subscribers.discard(handler)

    def send_to_user(self, user: str, message: Personalize) -> None:
        """Send ``message`` to the open tabs of ``user`` only (a tab knows its own user)."""
        for handler in list(self._subscribers):
            if handler.specgen_user == user:
                handler.send(message)

    def browser_status(self) -> Status:
        s = self.client.state
        return Status(reply_to=None, state=s.state, model=_display_name(s.model), device=s.device, message=s.message,  # type: ignore[arg-type]
                      reason=s.reason, offer=s.offer)

    def _broadcast(self, state: BackendState) -> None:
        self.log.info("model backend: %s %s %s", state.state, state.model, state.message)
        status = self.browser_status()
        for handler in list(self._subscribers):
            handler.send(status)
        if state.state == "ready":
            self.personalize.on_backend_ready()

    def _on_job(self, state) -> None:
        self.personalize.on_job(state)


def _display_name(model: str) -> str:
    """A hub id as it is; a local folder by its name (the status bar has little room)."""
    path = Path(model).expanduser()
    return path.name if model and path.is_dir() else model


class SpecgenExtension(ExtensionApp):
    name = "jupyter_specgen"

    model = Unicode(
        "auto",
        help="Hugging Face causal LM for completions: a hub id or a local folder. auto (default): the largest "
        "code model of the list (Qwen2.5-Coder 0.5B/1.5B/3B, StarCoder2 3B, DeepSeek-Coder 1.3B) found in the "
        "Hugging Face cache or in model_dirs that fits the device (a CPU: the 0.5B class), else the small model "
        "shipped with the package.",
    ).tag(config=True)
    model_dirs = List(
        Unicode(),
        help="Folders that model 'auto' looks in besides the Hugging Face cache: a model folder copied in by hand "
        "as <dir>/Qwen2.5-Coder-0.5B is found there. Default: [<jupyter data dir>/specgen/models].",
    ).tag(config=True)
    device = Unicode("auto", help="Device of the child backend: auto (cuda if present), cpu, cuda, cuda:N.").tag(config=True)
    serving_engine = Enum(
        ["native", "vllm"], "native",
        help="Who generates for the child backend: native (in the backend process; the only engine that serves "
        "fLoRA adapters) or vllm (a vLLM server with its multi-LoRA engine, for a host that outgrows one GPU; "
        "see docs/serving.md).",
    ).tag(config=True)
    vllm_url = Unicode(
        "", help="With serving_engine vllm: http://HOST:PORT of a running `vllm serve` to use, or several replicas "
        "of one model separated by commas (each user is routed to one of them, where their adapters are "
        "registered). Empty: the backend starts one (from the environment scripts/vllm_env.sh builds).",
    ).tag(config=True)
    dtype = Unicode("auto", help="Weights dtype of the child backend: auto, float32, bfloat16, float16.").tag(config=True)
    backend_url = Unicode(
        "", help="ws:// URL of a standalone `specgen-backend serve`. Empty: start one as a child process on loopback."
    ).tag(config=True)
    backend_token = Unicode("", help="Token of the standalone backend at backend_url.").tag(config=True)
    backend_token_file = Unicode("", help="File holding the token of the standalone backend at backend_url.").tag(config=True)
    candidates = Int(CompletionSettings.candidates, help="Candidates sampled per completion request.").tag(config=True)
    max_tokens = Int(CompletionSettings.max_tokens, help="Most new tokens per candidate.").tag(config=True)
    max_tokens_mid_line = Int(
        CompletionSettings.max_tokens_mid_line,
        help="Most new tokens per candidate when the cursor is inside a line (the rest of one statement).",
    ).tag(config=True)
    temperature = Float(CompletionSettings.temperature, help="Sampling temperature; 0 is greedy.").tag(config=True)
    kernel_specs = Bool(
        True, help="Ground prompts in the live kernel: load the kernel extension into new kernels and ask it for specs."
    ).tag(config=True)
    validate = Bool(True, help="Run each candidate in a fork of the kernel before showing it.").tag(config=True)
    fim = Enum(
        ["auto", True, False], "auto",
        help="Give the model the text after the cursor too (fill-in-the-middle) when its tokenizer has FIM tokens: "
        "True; False: prompts hold only the text before the cursor; 'auto': True unless the model's folder advises "
        "plain prompts, as the embedded model's does (it completes better from the text before the cursor).",
    ).tag(config=True)
    constrain = Bool(
        CompletionSettings.constrain,
        help="Hold the identifier at the cursor to the names the live kernel has (attributes, columns, parameters).",
    ).tag(config=True)
    specs_budget_ms = Int(CompletionSettings.specs_budget_ms, help="Time the kernel gets to describe its variables.").tag(config=True)
    personalize = Bool(
        PersonalizeSettings.enabled,
        help="Complete with each user's own published adapters (trained by 'Personalize my completions').",
    ).tag(config=True)
    personalize_variants = Int(
        PersonalizeSettings.variants,
        help="Variant adapters a personalize job trains on influence groups of the data (0-8); a completion's "
        "candidates are then sampled across them. Each variant adds training time.",
    ).tag(config=True)
    personalize_kind = Enum(
        ["lora", "flora"], PersonalizeSettings.kind,
        help="The adapter a personalize job trains: lora (PEFT, additive) or flora (multiplicative, cheaper to "
        "serve for many users at once; trains no variants).",
    ).tag(config=True)
    personalize_steps = Int(PersonalizeSettings.steps, help="Optimizer steps of a personalize job; 0: the backend's default.").tag(config=True)
    adapter_root = Unicode(
        help="Where the child backend keeps the users' adapters (one folder per user, versioned). "
        "Default: <jupyter data dir>/specgen/adapters.",
    ).tag(config=True)
    feedback_path = Unicode(
        help="SQLite file of accepted and dismissed suggestions. Default: <jupyter data dir>/specgen/feedback.sqlite.",
    ).tag(config=True)

    @default("model_dirs")
    def _default_model_dirs(self) -> list[str]:
        return [str(Path(jupyter_data_dir()) / "specgen" / "models")]

    @default("adapter_root")
    def _default_adapter_root(self) -> str:
        return str(Path(jupyter_data_dir()) / "specgen" / "adapters")

    @default("feedback_path")
    def _default_feedback_path(self) -> str:
        return str(default_feedback_path())

    def backend_args(self) -> tuple[str, ...]:
        """The child backend's arguments beyond model, device and dtype (see `specgen-backend serve --help`)."""
        args = ["--adapter-root", self.adapter_root, "--engine", self.serving_engine]
        if self.vllm_url:
            if self.serving_engine != "vllm":
                raise ValueError("SpecgenExtension.vllm_url is used only with SpecgenExtension.serving_engine = 'vllm'")
            args += ["--vllm-url", self.vllm_url]
        for folder in self.model_dirs:
            args += ["--model-dir", folder]
        args += ["--fim", {True: "on", False: "off"}.get(self.fim, "auto")]
        return tuple(args)

    def initialize_settings(self) -> None:
        process = None
        if not self.backend_url:
            process = BackendProcess(model=self.model, device=self.device, dtype=self.dtype,
                                     extra_args=self.backend_args())
        settings = CompletionSettings(
            candidates=self.candidates,
            max_tokens=self.max_tokens,
            max_tokens_mid_line=self.max_tokens_mid_line,
            temperature=self.temperature,
            specs_budget_ms=self.specs_budget_ms,
            validate=self.validate,
            kernel_specs=self.kernel_specs,
            constrain=self.constrain,
            personal=self.personalize,
        )
        kernels = None
        if self.kernel_specs or self.validate:
            # Kernels started from now on load the kernel extension (specs, validation, log): each
            # setting needs it on its own; validation must not stop because specs are off.
            autoload.install(self.serverapp.kernel_spec_manager)
            kernels = KernelLinks(self.serverapp.kernel_manager)
            self._forget_links_of_shut_down_kernels(kernels)

        async def locate() -> tuple[str, str]:
            if process is None:
                return self.backend_url, self._standalone_token()
            while True:
                try:
                    return await process.wait_listening(timeout=5), process.token
                except asyncio.TimeoutError:
                    if process.last_error:
                        self.service.client.set_state(BackendState(state="starting", model=self.model, message=process.last_error))

        def make_client(on_state, on_job) -> BackendClient:
            return BackendClient(locate, model=self.model, on_state=on_state, on_job=on_job)

        personalize = PersonalizeSettings(enabled=self.personalize, variants=self.personalize_variants,
                                          steps=self.personalize_steps, kind=self.personalize_kind)
        self.service = SpecgenService(
            client_factory=make_client, process=process, kernels=kernels, completion_settings=settings,
            root_dir=str(Path(self.serverapp.root_dir).expanduser().resolve()),
            feedback=FeedbackStore(self.feedback_path), personalize_settings=personalize, log=self.log,
        )  # fmt: skip
        self.settings.update({"specgen": self.service})

    def initialize_handlers(self) -> None:
        self.handlers.append((r"/specgen/ws", CompletionsWebSocket))
        self.handlers.extend(personalize_handlers())

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        self.service.ensure_started()

    async def stop_extension(self) -> None:
        await self.service.stop()

    def _forget_links_of_shut_down_kernels(self, kernels: KernelLinks) -> None:
        """Tie each kernel link's life to its kernel's: the server's kernel managers emit a
        ``kernel_actions`` event when a kernel is shut down (``KernelLinks.sweep`` catches the rest)."""

        async def on_kernel_action(logger, schema_id: str, data: dict) -> None:
            if data.get("action") == "shutdown" and data.get("kernel_id"):
                await kernels.forget(data["kernel_id"])

        try:
            self.serverapp.event_logger.add_listener(schema_id=KERNEL_ACTIONS_SCHEMA, listener=on_kernel_action)
        except Exception as exc:  # an older jupyter_server without the schema: the sweep alone
            self.log.info("kernel shutdown events unavailable (%s); kernel links are swept on use", exc)

    def _standalone_token(self) -> str:
        if self.backend_token_file:
            return Path(self.backend_token_file).expanduser().read_text().strip()
        return self.backend_token
