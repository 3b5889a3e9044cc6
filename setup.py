"""Build the Cython kernels in ``workbench/_ext``.

Every kernel has a NumPy twin with the same signature; the package imports and works without
the compiled module (``WORKBENCH_BACKEND=numpy`` forces the twin).
"""

from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

sources = sorted(str(p) for p in Path("workbench/_ext").glob("*.pyx"))
extensions = [
    Extension(
        "workbench._ext." + Path(src).stem,
        [src],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for src in sources
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
