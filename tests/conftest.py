import os

# Tests run on the JAX CPU backend; keep XLA from grabbing every core's worth of threads per test.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's cost is XLA compilation of many small programs, not their run time: compiling with
# LLVM optimisation off cuts the suite's wall time by about a quarter. It changes no numerics (no
# fast-math); subprocesses (CLI, notebooks, multi-device runs) inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)
