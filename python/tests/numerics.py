"""Float comparisons that hold on every CPU.

Kernels differ between CPUs (AVX2 against AVX-512, oneDNN's and Eigen's choices), so two
correct float32 computations of the same model differ by a few units in the last place of
their *largest* values: near 350, one float32 step is 3e-5. A fixed ``atol`` fails there; an
element-wise ``rtol`` fails on the small elements of the same output. The tolerance here is
relative to the magnitude of the expected values as a whole.
"""
import numpy as np

__all__ = ["assert_close"]


def assert_close(actual, desired, tol=1e-5, err_msg=""):
    """Assert ``|actual - desired| <= tol * max(1, max|desired|)`` element-wise."""
    desired = np.asarray(desired, np.float64)
    actual = np.asarray(actual, np.float64)
    scale = max(1.0, float(np.abs(desired).max())) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * scale, err_msg=err_msg)
