"""`import lris.torch` on the CPU: it works whatever torch's default device is, and makes no
CUDA context. Skipped where torch is missing (CI has none)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def run(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("default", ["meta", "cpu"])
def test_import_under_a_default_device(default):
    out = run(f"""
import torch
torch.set_default_device({default!r})
import lris.torch
with torch.device("meta"):
    import importlib
    importlib.reload(lris.torch)
print(torch.empty(3).device.type)
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == default


def test_import_makes_no_cuda_context():
    out = run("""
import torch
import lris.torch
print(torch.cuda.is_initialized())
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
