"""bf16 only on GPUs that compute it natively: the decision, checked on CPU by standing in for
torch's device query."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from dars.engine import precision

GPU = torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bool]]:
    """A stand-in GPU whose native bf16 support the test sets; the per-process answer is
    forgotten before and after."""
    answer = {"native": True}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        assert not including_emulation  # emulated bf16 is what must be refused
        return answer["native"]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla V100-SXM2-16GB")
    precision._native_bf16.cache_clear()
    yield answer
    precision._native_bf16.cache_clear()


def test_native_gpu_uses_bf16_when_asked(gpu: dict[str, bool],
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert precision.use_bf16(True, GPU)
        assert not precision.use_bf16(False, GPU)
    assert not caplog.records


def test_gpu_without_native_bf16_falls_back_to_fp32_with_one_warning(
        gpu: dict[str, bool], caplog: pytest.LogCaptureFixture) -> None:
    gpu["native"] = False
    with caplog.at_level(logging.WARNING):
        assert [precision.use_bf16(True, GPU) for _ in range(3)] == [False] * 3
    assert len(caplog.records) == 1
    assert "Tesla V100" in caplog.text and "float32" in caplog.text


def test_cpu_never_uses_bf16(gpu: dict[str, bool], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert not precision.use_bf16(True, torch.device("cpu"))
    assert not caplog.records
