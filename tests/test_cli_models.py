"""The command line around the model zoo: `xvit models`, `xvit info`, `python -m xvit`."""

import subprocess
import sys

from xvit.cli import main


def test_models_lists_names(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.split()
    assert "xvit_base_patch16_224" in out and "joint_nano_patch8_32" in out


def test_info_prints_params_flops_and_runs_a_forward(capsys):
    assert main(["info", "xvit_nano_patch8_32", "--frames", "3", "8"]) == 0
    out = capsys.readouterr().out
    assert "frames=3" in out and "frames=8" in out and "GFLOPs/view" in out and "multiply-adds" in out
    assert "logits (1, 400)" in out


def test_info_table(capsys):
    assert main(["info", "--table", "*_nano_*", "--frames", "8", "16"]) == 0
    out = capsys.readouterr().out
    assert "| `xvit_nano_patch8_32` |" in out and "GFLOPs/view @16f" in out


def test_unknown_model_exits_2_without_traceback(capsys):
    assert main(["info", "xvit_nano_patch8_23"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "xvit_nano_patch8_32" in err and "Traceback" not in err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "xvit", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("info", "train", "eval", "predict", "bench", "make-synthetic", "check-data"):
        assert command in out
