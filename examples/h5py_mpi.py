"""Parallel HDF5 from Python: every MPI rank writes its own chunks of one resid-filtered
dataset through h5py's MPI-IO driver, collectively (HDF5 writes filtered datasets in parallel
only collectively), then rank 0 reads it back and checks the bound.

Needs h5py built against parallel HDF5 (PyPI's h5py wheels are serial) and mpi4py; on
Debian 12 after `scripts/setup --mpi`, in a virtual environment (docs/USAGE.md, "Parallel HDF5"):

    pip install --only-binary=:all: mpi4py numpy Cython pkgconfig "setuptools>=77" wheel
    CC=mpicc HDF5_MPI=ON HDF5_PKGCONFIG_NAME=hdf5-openmpi CFLAGS="-O1 -g0" \
        pip install --no-binary=h5py --no-build-isolation --no-deps h5py
    HDF5_PLUGIN_PATH=$PWD/target/release mpirun -n 2 -x HDF5_PLUGIN_PATH python examples/h5py_mpi.py mpi.h5

The plugin is found through HDF5_PLUGIN_PATH (resid_h5 registers it with h5py's own HDF5 the
same way, but it is not needed here).
"""

import struct
import sys

import h5py
import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
path = sys.argv[1] if len(sys.argv) > 1 else "mpi.h5"
rows, cols, bound = 64, 256, 1e-3  # each rank: 64 rows, in 64x64 chunks of its own


def part(r):
    """Rank r's rows: a smooth field, deterministic, so rank 0 can recompute every part."""
    y, x = np.meshgrid(np.arange(r * rows, (r + 1) * rows), np.arange(cols), indexing="ij")
    return (np.sin(0.05 * y) * np.cos(0.03 * x) + 0.01 * y).astype(np.float32)


hi, lo = struct.unpack(">II", struct.pack(">d", bound))
with h5py.File(path, "w", driver="mpio", comm=comm) as f:
    # Every rank creates the dataset with the same arguments (a collective call).
    d = f.create_dataset("x", shape=(size * rows, cols), dtype="f4", chunks=(rows, 64),
                         compression=32900, compression_opts=(1, 0, hi, lo))  # abs 1e-3
    with d.collective:
        d[rank * rows:(rank + 1) * rows] = part(rank)

if rank == 0:
    with h5py.File(path, "r") as f:
        d = f["x"]
        err = max(float(np.abs(d[r * rows:(r + 1) * rows] - part(r)).max()) for r in range(size))
        ratio = d.size * 4 / d.id.get_storage_size()
    print(f"h5py_mpi: {size} ranks wrote {path}:/x {d.shape}, ratio {ratio:.1f}, max error {err:.3g}")
    sys.exit(0 if err <= bound else 1)
