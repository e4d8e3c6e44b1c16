"""trtjit: an inference compiler on Triton.

    engine = trtjit.compile(module, example_inputs)
    outputs = engine(*inputs)
"""

from __future__ import annotations

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "codegen")) and os.path.isfile(os.path.join(_root, "codegen", "__init__.py")):
    # Source checkout: passes/ and codegen/ sit beside this package and install as trtjit.passes and
    # trtjit.codegen; editable installs by older setuptools (a bare path entry) do not map them.
    __path__.append(_root)  # noqa: F821

if "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
    import torch as _torch

    if not _torch.cuda.is_available():
        # Triton picks interpreter vs compiler at import time; with no GPU, kernels run interpreted.
        os.environ["TRITON_INTERPRET"] = "1"

from trtjit import qdq_torch as _qdq_torch  # noqa: E402, F401  (torch quantize/dequantize converters)
from trtjit.builder import build, compile  # noqa: E402
from trtjit.calibration import (  # noqa: E402
    Calibrator,
    EntropyCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    PercentileCalibrator,
)
from trtjit.engine import Engine  # noqa: E402
from trtjit.engine_file import EngineFileError  # noqa: E402
from trtjit.errors import (  # noqa: E402
    BuildError,
    CalibrationError,
    EngineError,
    GraphError,
    InputError,
    TrtjitError,
    UnsupportedOpError,
)
from trtjit.interpreter import run_graph  # noqa: E402
from trtjit.ir import Graph, Node, TensorSpec, Value  # noqa: E402
from trtjit.options import BuildOptions  # noqa: E402

__version__ = "0.1.0"


def load(path: str, key: bytes | str | None = None, rebuild: bool = False) -> Engine:
    """Load an engine file. ``key`` (or the TRTJIT_SIGNING_KEY environment variable) makes signatures
    mandatory: unsigned or altered files are refused. On a GPU, a file built with ``targets=`` runs its
    stored cubins for this GPU's arch (no compiler, no JIT); a file without this arch is refused, naming the
    archs it has, unless ``rebuild=True`` lets Triton's JIT compile the kernels regenerated from the IR."""
    from trtjit.engine_file import load as _load

    return _load(path, key if key is not None else os.environ.get("TRTJIT_SIGNING_KEY") or None, rebuild=rebuild)


__all__ = ["BuildError", "BuildOptions", "CalibrationError", "Calibrator", "Engine", "EntropyCalibrator",
           "MSECalibrator", "MinMaxCalibrator", "PercentileCalibrator", "EngineError", "EngineFileError", "Graph", "GraphError", "InputError", "Node",
           "TensorSpec", "TrtjitError", "UnsupportedOpError", "Value", "build", "compile", "load", "run_graph"]
