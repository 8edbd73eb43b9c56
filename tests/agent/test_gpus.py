"""The node's GPUs: what nvidia-smi says, what an operator types, what a renderer is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.gpus import GpuListError, detect, parse_given, parse_query, visible_devices
from farmtui.protocol import GpuInfo


def test_nvidia_smi_lines_become_gpus_and_odd_lines_are_skipped() -> None:
    text = "0, NVIDIA GeForce RTX 4090, 24564\n\n1, Quadro, P6000, [N/A]\nnot a gpu\n"
    assert parse_query(text) == [
        GpuInfo(index=0, name="NVIDIA GeForce RTX 4090", memory=24564),
        GpuInfo(index=1, name="Quadro, P6000", memory=0),
    ]


def test_detect_runs_nvidia_smi_and_offers_no_gpu_when_it_fails(tmp_path: Path) -> None:
    good = tmp_path / "smi"
    good.write_text('#!/bin/sh\necho "0, Fake, 8192"\n')
    good.chmod(0o755)
    bad = tmp_path / "broken"
    bad.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    bad.chmod(0o755)
    assert detect(str(good)) == [GpuInfo(index=0, name="Fake", memory=8192)]
    assert detect(str(bad)) == []
    assert detect(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("0,1", [(0, 0), (1, 0)]),
        ("1:24G,0:12000", [(0, 12000), (1, 24576)]),
        ("none", []),
    ],
)
def test_gpus_given_by_hand(text: str, wanted: list[tuple[int, int]]) -> None:
    assert [(g.index, g.memory) for g in parse_given(text)] == wanted


@pytest.mark.parametrize("text", ["0,0", "a", "0:lots", "-1", "0;1"])
def test_a_bad_gpu_list_is_one_line(text: str) -> None:
    with pytest.raises(GpuListError) as caught:
        parse_given(text)
    assert str(caught.value).startswith("--gpus: ")
    assert "\n" not in str(caught.value)


def test_a_chunk_sees_exactly_its_devices_numbered_as_nvidia_smi_numbers_them() -> None:
    assert visible_devices([1, 3]) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "1,3",
        "FARMTUI_GPUS": "1,3",
    }
    assert visible_devices([])["CUDA_VISIBLE_DEVICES"] == ""


def test_odd_nvidia_smi_output_costs_that_gpu_never_the_node(tmp_path: Path) -> None:
    lines = [
        "0, Good, 8192",
        "0, Twice, 8192",  # listed again
        "5000, Too far, 8192",  # beyond the indices a node may have
        "1, Huge, 99999999999",  # beyond any card
        "2, Tab\there \x1b[31mred, 4096",  # control characters in the name
    ]
    smi = tmp_path / "smi"
    smi.write_bytes(
        b"#!/bin/sh\nprintf '%s\\n' "
        + b" ".join(b"'" + line.encode() + b"'" for line in lines)
        + b"\nprintf '3, \\377\\376, 1024\\n'\n"
    )
    smi.chmod(0o755)
    found = detect(str(smi))
    assert [(g.index, g.name) for g in found] == [
        (0, "Good"),
        (2, "Tab?here ?[31mred"),
        (3, "\ufffd\ufffd"),
    ]
