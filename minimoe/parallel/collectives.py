"""The MPI collectives of expert parallelism, two of them as autograd ops.

* `AllToAll`: rank r sends its first send_counts[0] rows to rank 0, the next send_counts[1] to
  rank 1... and receives rows from every rank, ordered by source (MPI's Alltoallv). Its backward
  is its transpose: every gradient row travels back to the rank its row came from -- the same
  Alltoallv with the send and receive counts swapped.
* `AllReduceSum`: the sum over ranks of a tensor (MPI's Allreduce). Every rank's loss depends on
  the sum, so the gradient of the sum of the ranks' losses with respect to one rank's input is the
  sum of all ranks' output gradients: the backward is an Allreduce too.

Both must be called by every rank in the same order, forward and backward (each rank builds the
same graph, so the backward pass visits them in the same order). MPI moves host memory here:
CuPy arrays are copied to the host and back (a CUDA-aware MPI could send device buffers directly).
"""
from __future__ import annotations

import numpy as np

from ..backend import asarray, name_of, to_numpy
from ..tensor import Function


def to_host(array) -> np.ndarray:
    """A C-contiguous host array MPI can read (no copy for a contiguous NumPy array)."""
    return np.asarray(array, order="C") if isinstance(array, np.ndarray) else to_numpy(array)


def like(host: np.ndarray, array):
    """`host` on the backend of `array` (the host array itself on NumPy)."""
    return host if isinstance(array, np.ndarray) else asarray(host, backend=name_of(array))


def exchange_counts(comm, send: np.ndarray) -> np.ndarray:
    """Alltoall of small host ints: send[q] goes to rank q; returns recv with recv[s] from rank s."""
    send = np.ascontiguousarray(send, dtype=np.int64)
    recv = np.empty_like(send)
    comm.Alltoall(send, recv)
    return recv


def sum_over_ranks(comm, values) -> np.ndarray:
    """Allreduce (sum) of a host array or number; every rank gets the total."""
    send = np.asarray(values, order="C")
    total = np.empty_like(send)
    comm.Allreduce(send, total)
    return total


def sum_over_lower_ranks(comm, values: np.ndarray) -> np.ndarray:
    """Exscan (exclusive prefix sum): rank r gets the sum over ranks 0 .. r-1 (zeros on rank 0,
    where MPI leaves the result undefined)."""
    send = np.asarray(values, order="C")
    lower = np.zeros_like(send)
    comm.Exscan(send, lower)
    return lower if comm.Get_rank() else np.zeros_like(send)


def _flatten(arrays) -> np.ndarray:
    """One host buffer holding every array (one message instead of one per array)."""
    return np.concatenate([to_host(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)


def _unflatten(buffer: np.ndarray, arrays) -> list:
    """The pieces of `buffer` shaped and placed like `arrays`."""
    stops = np.cumsum([a.size for a in arrays])
    return [like(piece.reshape(a.shape).astype(a.dtype), a) for a, piece in zip(arrays, np.split(buffer, stops[:-1]))]


def sum_arrays_over_ranks(comm, arrays) -> list:
    """The sum over ranks of each array in a list (one Allreduce of them all, flattened: what
    data-parallel training does with its gradient buckets)."""
    return _unflatten(sum_over_ranks(comm, _flatten(arrays)), arrays)


def broadcast_arrays(comm, arrays, root: int = 0) -> list:
    """Rank `root`'s values of each array in a list (one Bcast of them all, flattened)."""
    buffer = _flatten(arrays)
    comm.Bcast(buffer, root=root)
    return _unflatten(buffer, arrays)


def broadcast_parameters(comm, params, root: int = 0) -> None:
    """Gives every parameter in `params` rank `root`'s values, so replicas start equal."""
    for p, value in zip(params, broadcast_arrays(comm, [p.data for p in params], root)):
        p.data = value


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def exchange_rows(comm, rows, send_counts: np.ndarray, recv_counts: np.ndarray):
    """Alltoallv of the rows of `rows` (n, d) as described above; returns (sum(recv_counts), d)."""
    host = to_host(rows)
    width = int(np.prod(host.shape[1:]))  # values per row: MPI counts values, not rows
    out = np.empty((int(recv_counts.sum()),) + host.shape[1:], dtype=host.dtype)
    comm.Alltoallv([host, (send_counts * width, _offsets(send_counts) * width)],
                   [out, (recv_counts * width, _offsets(recv_counts) * width)])
    return like(out, rows)


class AllToAll(Function):
    """Rows to the ranks given by send_counts; backward: their gradients back where they came from."""

    def forward(self, x, comm, send_counts, recv_counts):
        self.comm, self.send_counts, self.recv_counts = comm, send_counts, recv_counts
        return exchange_rows(comm, x, send_counts, recv_counts)

    def backward(self, g):
        return (exchange_rows(self.comm, g, self.recv_counts, self.send_counts),)


class AllReduceSum(Function):
    """The sum over ranks; backward: the sum over ranks of the gradients."""

    def forward(self, x, comm):
        self.comm = comm
        return like(sum_over_ranks(comm, to_host(x)), x)

    def backward(self, g):
        return (like(sum_over_ranks(self.comm, to_host(g)), g),)


def all_to_all(x, comm, send_counts: np.ndarray, recv_counts: np.ndarray):
    return AllToAll.apply(x, comm=comm, send_counts=np.asarray(send_counts), recv_counts=np.asarray(recv_counts))


def all_reduce_sum(x, comm):
    return AllReduceSum.apply(x, comm=comm)
