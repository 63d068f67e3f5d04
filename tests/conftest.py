"""Shared pytest configuration: offline Hugging Face, hypothesis profiles, and the ``integration``/``gpu`` markers.

``HYPOTHESIS_PROFILE`` picks the hypothesis profile: ``dev`` (the default, 50 examples) or ``ci`` (100 examples,
derandomized so CI is reproducible, no deadline; at 500 the property-heavy files alone took about a minute each).
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub/transformers: never touch the network, and keep their logs quiet.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
from hypothesis import settings

from tests.tokenizers import SHARED_DIR

settings.register_profile("dev", max_examples=50)
settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``integration`` tests without ``../shared/tokenizers`` and ``gpu`` tests without CUDA."""
    if not SHARED_DIR.is_dir():
        skip = pytest.mark.skip(reason=f"integration: {SHARED_DIR} (the repository's sibling shared/) is absent")
        for item in items:
            if item.get_closest_marker("integration") is not None:
                item.add_marker(skip)
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="gpu: CUDA is not available")
            for item in gpu_items:
                item.add_marker(skip)
