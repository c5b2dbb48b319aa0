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

    assert _serve_args(SpecgenExtension(adapter_root=str(tmp_path))).no_fim is False
    assert _serve_args(SpecgenExtension(adapter_root=str(tmp_path), fim=False)).no_fim is True
    loaded = load_model(str(tiny_model), device="cpu")
    request = Generate(id="r", user="u", context=CompletionContext(prefix="x = len(", suffix=")\nprint(x)\n"))
    fim = Engine(loaded).prompt_for(request)
    causal = Engine(loaded, EngineConfig(fim=False)).prompt_for(request)
    assert fim.fim and "<|fim_suffix|>" in fim.text and "print(x)" in fim.text  # the tiny tokenizer has Qwen's FIM
    assert not causal.fim and causal.text.endswith("x = len(") and "print(x)" not in causal.text
