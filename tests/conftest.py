"""Shared test set-up: tests marked `gpu` are skipped when no CUDA GPU is present; tests
marked `interpreter` (they force Triton's CPU interpreter even on a GPU host) are skipped
when this Triton's interpreter cannot run moeplan's kernels (seen with Triton 3.6 and
NumPy 2.x: a runtime loop bound arrives as a 1-element array, which range() rejects)."""

import functools
import os
import subprocess
import sys

import pytest

# Output is laid out for $COLUMNS (moeplan.cli.render.terminal_width). pytest-xdist's workers set
# COLUMNS=80; a test that wants a width passes it to the CliRunner itself, so every run (serial or
# `-n 2`) lays out the rest the same way: as a pipe does, with no COLUMNS.
os.environ.pop("COLUMNS", None)

_PROBE = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl

@triton.jit
def k(out_ptr, n, B: tl.constexpr):
    acc = tl.zeros((B,), dtype=tl.float32)
    for i in range(0, n * 2):
        acc += 1.0
    tl.store(out_ptr + tl.arange(0, B), acc)

out = torch.zeros(4)
k[(1,)](out, 3, B=4)
assert out.tolist() == [6.0] * 4, out
"""


@functools.lru_cache(maxsize=1)
def interpreter_problem() -> str:
    """Empty if Triton's CPU interpreter runs a kernel with a runtime loop bound, else why not."""
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return ""
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {r.returncode}"


def _has_cuda() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("interpreter" in item.keywords for item in items):
        why = interpreter_problem()
        if why:
            skip_i = pytest.mark.skip(reason=f"this Triton's CPU interpreter cannot run the kernels: {why}")
            for item in items:
                if "interpreter" in item.keywords:
                    item.add_marker(skip_i)
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The tuner's CPU test model: 4 experts, top-2, hidden 64, expert width 32 (Mixtral's naming).
TINY_MIXTRAL = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 4,
                "num_experts_per_tok": 2, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 1,
                "hidden_act": "silu"}


@pytest.fixture
def tiny_model(tmp_path):
    """Path of a config.json of TINY_MIXTRAL in its own folder."""
    import json

    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_MIXTRAL))
    return d / "config.json"


@pytest.fixture
def cost_model_timer(monkeypatch):
    """Interpreter tune runs scored by the deterministic cost model, with no injected faults."""
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
