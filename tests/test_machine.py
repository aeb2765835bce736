"""CPU chunk sizes follow the machine's caches: smaller caches give smaller chunks, bad overrides are clear errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lstm_trading.core import machine
from lstm_trading.core.errors import ConfigError
from lstm_trading.core.machine import L2_ENV, L3_ENV, cpu_caches
from lstm_trading.models.lstm.inference import inference_sample_steps
from lstm_trading.models.lstm.model import auto_chunk_len, training_sample_steps

CPU = torch.device("cpu")


@pytest.fixture
def caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment overrides read afresh: `cpu_caches` is cached once per process otherwise."""
    cpu_caches.cache_clear()
    yield monkeypatch
    monkeypatch.delenv(L2_ENV, raising=False)
    monkeypatch.delenv(L3_ENV, raising=False)
    cpu_caches.cache_clear()


def test_large_caches_keep_the_measured_chunks(caches: pytest.MonkeyPatch) -> None:
    for l2, l3 in (("2M", "16M"), ("512K", "16M")):  # the Intel and the AMD machine of benchmarks/README.md
        caches.setenv(L2_ENV, l2)
        caches.setenv(L3_ENV, l3)
        cpu_caches.cache_clear()
        assert (training_sample_steps(), inference_sample_steps()) == (4_096, 8_192)
        assert auto_chunk_len(32, CPU) == 128


def test_smaller_caches_give_smaller_chunks(caches: pytest.MonkeyPatch) -> None:
    caches.setenv(L2_ENV, "2M")
    caches.setenv(L3_ENV, "2M")
    assert cpu_caches().per_core_bytes == 4 * 2**20
    assert (training_sample_steps(), inference_sample_steps()) == (1_024, 2_048)
    assert auto_chunk_len(16, CPU) == 64
    caches.setenv(L3_ENV, "1K")  # a 2 MB L2 and next to no L3
    cpu_caches.cache_clear()
    assert (training_sample_steps(), inference_sample_steps()) == (512, 1_024)
    assert auto_chunk_len(16, CPU) == 32
    assert auto_chunk_len(16, torch.device("cuda")) == 4_096  # GPUs are not sized by the CPU's caches


@pytest.mark.parametrize("text", ["lots", "0", "-1M", "2.5M", "M"])
def test_a_malformed_override_is_a_clear_error(caches: pytest.MonkeyPatch, text: str) -> None:
    caches.setenv(L2_ENV, text)
    message = f"{L2_ENV}={text!r} is not a cache size: give bytes, e.g. 524288, 512K or 2M"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        cpu_caches()


def test_sysfs_l3_is_shared_by_its_cpus(tmp_path: Path, caches: pytest.MonkeyPatch) -> None:
    for index, (level, kind, size, shared) in enumerate(
        [
            (1, "Data", "32K", "0"),
            (1, "Instruction", "32K", "0"),
            (2, "Unified", "512K", "0"),
            (3, "Unified", "32768K", "0-1,4-5"),
        ]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (folder / name).write_text(f"{value}\n")
    caches.setattr(machine, "_SYSFS_CACHE", tmp_path)
    assert cpu_caches() == machine.CpuCaches(512 * 2**10, 8 * 2**20, "sysfs")  # 32 MB over 4 CPUs
