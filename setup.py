"""The one compiled part: contracts._normals (the seed contract's latents drawn without the interpreter lock).

Optional: without a C compiler the install still succeeds and contracts.native_latents falls back to NumPy
(the same values, slower); gan-serve says which it runs (/v1/models' latent_sampler). Everything else is in
pyproject.toml."""

from pathlib import Path

import numpy as np
from setuptools import Extension, setup

NUMPY_RANDOM_LIB = Path(np.__file__).parent / "random" / "lib"  # libnpyrandom.a, shipped for extensions

setup(
    ext_modules=[
        Extension(
            "contracts._normals",
            sources=["contracts/_normals.c"],
            include_dirs=[np.get_include()],
            library_dirs=[str(NUMPY_RANDOM_LIB)],
            libraries=["npyrandom", "m"],
            optional=True,
        )
    ]
)
