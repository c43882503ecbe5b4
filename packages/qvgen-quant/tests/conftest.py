"""qvgen-quant tests: without a GPU, the Triton kernel tests run under Triton's CPU interpreter.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a function, including Triton's own library
functions, so it must be set before anything in this process imports triton (torchao may, via qvgen.quant).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
