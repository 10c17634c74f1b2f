"""face3dkit.sysinfo: the machine line printed by the benchmarks."""

import os

import torch

from face3dkit import sysinfo


def test_cpu_name_reads_the_model_name_line(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 1.00GHz\nflags\t: fpu\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
    assert sysinfo.cpu_name() == "Test CPU @ 1.00GHz"


def test_cpu_name_without_proc_falls_back(monkeypatch):
    def missing(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", missing)
    assert isinstance(sysinfo.cpu_name(), str) and sysinfo.cpu_name()


def test_machine_summary_names_device_torch_threads_and_cores():
    line = sysinfo.machine_summary("cpu")
    assert line.startswith("cpu (")
    assert f"torch {torch.__version__}" in line
    assert f"{torch.get_num_threads()} threads" in line
    assert f"{os.cpu_count()} logical CPUs" in line and "load average" in line
