"""The settings of the child backend reach `specgen-backend serve` as arguments it accepts."""

from __future__ import annotations

import pytest
from specgen_backend.cli import _parser

from jupyter_specgen.extension import SpecgenExtension


def _serve_args(extension: SpecgenExtension):
    return _parser().parse_args(["serve", "--model", extension.model, *extension.backend_args()])


def test_the_default_is_the_native_engine(tmp_path):
    extension = SpecgenExtension(adapter_root=str(tmp_path / "adapters"), model_dirs=[str(tmp_path / "m1"), str(tmp_path / "m2")])
    args = _serve_args(extension)
    assert (args.engine, args.vllm_url, args.model) == ("native", None, "auto")
    assert [str(p) for p in args.model_dir] == [str(tmp_path / "m1"), str(tmp_path / "m2")]
    assert str(args.adapter_root) == str(tmp_path / "adapters")


def test_vllm_engine_and_url_are_passed_on(tmp_path):
    extension = SpecgenExtension(adapter_root=str(tmp_path), serving_engine="vllm", vllm_url="http://127.0.0.1:8123")
    args = _serve_args(extension)
    assert (args.engine, args.vllm_url) == ("vllm", "http://127.0.0.1:8123")


def test_a_url_without_the_vllm_engine_is_refused_in_words(tmp_path):
    extension = SpecgenExtension(adapter_root=str(tmp_path), vllm_url="http://127.0.0.1:8123")
    with pytest.raises(ValueError, match="serving_engine = 'vllm'"):
        extension.backend_args()


def test_an_unknown_engine_is_refused_by_the_setting():
    from traitlets import TraitError

    with pytest.raises(TraitError):
        SpecgenExtension(serving_engine="tgi")


def test_fim_off_reaches_the_backend_and_its_engine_prompts_hold_no_suffix(tmp_path, tiny_model):
    from specgen_backend.engine import Engine, EngineConfig
    from specgen_backend.loading import load_model
    from specgen_backend.protocol import CompletionContext, Generate

    assert _serve_args(SpecgenExtension(adapter_root=str(tmp_path))).fim == "auto"
    assert _serve_args(SpecgenExtension(adapter_root=str(tmp_path), fim=False)).fim == "off"
    assert _serve_args(SpecgenExtension(adapter_root=str(tmp_path), fim=True)).fim == "on"
    loaded = load_model(str(tiny_model), device="cpu")
    request = Generate(id="r", user="u", context=CompletionContext(prefix="x = len(", suffix=")\nprint(x)\n"))
    fim = Engine(loaded).prompt_for(request)
    causal = Engine(loaded, EngineConfig(fim="off")).prompt_for(request)
    assert fim.fim and "<|fim_suffix|>" in fim.text and "print(x)" in fim.text  # the tiny tokenizer has Qwen's FIM
    assert not causal.fim and causal.text.endswith("x = len(") and "print(x)" not in causal.text


def test_a_model_folder_that_advises_plain_prompts_gets_them_unless_fim_is_on(tmp_path, tiny_model):
    """The embedded model's MANIFEST.json says ``"serving": {"fim": false}``: under "auto" (the
    default) its prompts hold no suffix, for serving and for personalization alike; "on" overrides."""
    import json
    import shutil

    from specgen_backend.engine import Engine, EngineConfig
    from specgen_backend.loading import load_model, prompt_fim
    from specgen_backend.models import default_model_path
    from specgen_backend.protocol import CompletionContext, Generate
    from specgen_backend.training.train import load_base

    folder = tmp_path / "advised"
    shutil.copytree(tiny_model, folder)
    (folder / "MANIFEST.json").write_text(json.dumps({"name": "t", "serving": {"fim": False}}))
    loaded = load_model(str(folder), device="cpu")
    request = Generate(id="r", user="u", context=CompletionContext(prefix="x = len(", suffix=")\nprint(x)\n"))
    assert not Engine(loaded).prompt_for(request).fim
    assert Engine(loaded, EngineConfig(fim="on")).prompt_for(request).fim
    assert load_base(folder).fim is None and load_base(folder, fim="on").fim is not None
    assert prompt_fim(str(tiny_model), loaded.tokenizer, "auto") is not None  # no advice: FIM
    with pytest.raises(ValueError, match="auto, on, off"):
        prompt_fim(str(folder), loaded.tokenizer, "sometimes")
    shipped = json.loads((default_model_path() / "MANIFEST.json").read_text())
    assert shipped["serving"]["fim"] is False  # the embedded model is served with plain prompts
