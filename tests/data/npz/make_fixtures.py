#!/usr/bin/env python3
"""Makes the .npz fixtures of tests/npz_test.cc with real NumPy (run once; outputs committed).

The values are simple formulas the test recomputes: a[i, j] = i * 10 + j + 0.5 and so on.
"""
import numpy as np


def arrays():
    a = (np.arange(2)[:, None] * 10 + np.arange(3)[None, :] + 0.5).astype("<f4")  # 2 x 3
    b = np.array([-3, 0, 7, 2**40, -(2**50)], dtype="<i8")
    c = np.arange(4, dtype="<u4").reshape(2, 2) * 1000
    d = np.linspace(-1, 1, 6).reshape(3, 2).astype("<f8")
    e = np.array([[1, -2], [3, -4]], dtype="<i4")
    return dict(a=a, b=b, c=c, d=d, e=e)


np.savez("savez.npz", **arrays())
np.savez_compressed("savez_compressed.npz", **arrays())
# Positional arrays: arr_0, arr_1, arr_2 (the layout of the seed pipeline's codebooks.npz).
np.savez("codebooks.npz", *[np.full((4, 3), level + 0.25, dtype="<f4") for level in range(3)])
np.savez("bigendian.npz", big=np.array([[1.5, -2.0], [3.25, 4.0]], dtype=">f4"))
np.savez("objects.npz", o=np.array([{"x": 1}], dtype=object))
