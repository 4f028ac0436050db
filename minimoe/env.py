"""`python -m minimoe.env`: what is installed here, and which backends minimoe can use.

Run it first on a new machine or in a hosted notebook. Each package is looked up without being
imported (importing PyTorch alone takes seconds), and each missing one comes with its install line.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from importlib import metadata

from . import __version__, backend

# (import name, why minimoe wants it, how to install it)
PACKAGES = [
    ("numpy", "required: the CPU backend", "pip install 'numpy>=2.0'"),
    ("matplotlib", "required: the lessons' and runs' plots", "pip install matplotlib"),
    ("tqdm", "required: progress bars", "pip install tqdm"),
    ("cupy", "optional: the GPU backend", backend.CUPY_INSTALL_HINT),
    ("mpi4py", "optional: lesson 09's all-to-all across processes", "pip install mpi4py mpich"),
    ("torch", "optional, a benchmark peer only (never needed)",
     "pip install torch (the CPU build is enough)"),
]


def installed_version(name: str) -> str | None:
    """The version of the package imported as `name`, or None when it is not installed."""
    if importlib.util.find_spec(name) is None:
        return None
    for distribution in metadata.packages_distributions().get(name, []):  # e.g. cupy-cuda12x
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown version"


def backend_report() -> list[tuple[str, bool, str]]:
    """(backend, usable, why) for each known backend."""
    report = []
    for name in backend.KNOWN_BACKENDS:
        if name == "cupy":
            usable, why = backend.cupy_status()
        else:
            try:
                backend.module(name)
                why = "the CPU" if name == "numpy" else "the CPU stand-in for CuPy, for tests"
                usable = True
            except Exception as err:  # a broken install: say so instead of failing the report
                usable, why = False, f"{type(err).__name__}: {err}"
        report.append((name, usable, why))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m minimoe.env",
        description="Print the versions of Python, minimoe and the packages it uses (with the "
                    "install line for what is missing), and which backends are usable here.",
    )
    parser.parse_args(argv)

    print(f"{'python':<11} {platform.python_version()} ({sys.executable})")
    print(f"{'minimoe':<11} {__version__}")
    for name, role, install in PACKAGES:
        version = installed_version(name)
        status = version if version else f"not installed ({install})"
        print(f"{name:<11} {status}  [{role}]")

    print("\nbackends (choose with minimoe.use(NAME) or --backend NAME):")
    for name, usable, why in backend_report():
        print(f"  {name:<7} {'usable' if usable else 'not usable'}: {why}")


if __name__ == "__main__":
    main()
