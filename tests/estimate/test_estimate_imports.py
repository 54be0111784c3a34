"""`peftlab.estimate` is pure Python: importing and using it loads no torch or transformers."""

import subprocess
import sys
from pathlib import Path


SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = ("torch", "transformers", "matplotlib", "numpy")

USE = f"""
import sys, time
start = time.perf_counter()
from peftlab.core.registry import method_names
from peftlab.estimate import estimate, Settings
from peftlab.estimate.render import seed_rows
from peftlab.estimate.scaling import scaling_table
for method in method_names():  # every registered method's declaration, read without torch
    estimate("llama-2-70b", method)
seed_rows(); scaling_table()
elapsed = time.perf_counter() - start
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, loaded
assert elapsed < 1.0, elapsed
"""

# Load the `peftlab` package as a bare namespace (its __init__, owned by the core, is not run)
# so this checks the estimate package's own imports whatever the top level imports.
BARE = f"""
import sys, types
package = types.ModuleType("peftlab"); package.__path__ = [{str(SRC / "peftlab")!r}]
sys.modules["peftlab"] = package
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_estimate_package_imports_no_torch_and_answers_in_under_a_second():
    result = _run(BARE + USE)
    assert result.returncode == 0, result.stderr


def test_import_peftlab_estimate_end_to_end_loads_no_torch():
    result = _run(USE)
    assert result.returncode == 0, result.stderr
