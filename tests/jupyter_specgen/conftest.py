"""Jupyter server configuration for the server-extension tests: the tiny model, short answers."""

from __future__ import annotations

import pytest


@pytest.fixture
def jp_server_config(tiny_model):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        # Sampled, not greedy: a random-weight model's argmax may end the completion at once.
        "SpecgenExtension": {"model": tiny_model, "max_tokens": 16, "candidates": 2, "temperature": 1.0},
    }
