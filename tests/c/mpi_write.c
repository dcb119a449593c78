/* Parallel HDF5 with the resid filter: every MPI rank writes its own chunks of one filtered
 * dataset with collective I/O (HDF5 >= 1.10.2 writes filtered datasets in parallel only
 * collectively), then rank 0 reports. The test reads the file back serially.
 *
 *   h5pcc tests/c/mpi_write.c -lm -o mpi_write          # or: mpicc ... $(pkg-config --cflags --libs hdf5-openmpi)
 *   HDF5_PLUGIN_PATH=$PWD/target/release mpirun -n 2 ./mpi_write out.h5 [bound]
 *
 * The dataset is (NRANKS * ROWS, COLS) float32 in (ROWS, CHUNK_COLS) chunks: rank r owns
 * rows [r*ROWS, (r+1)*ROWS), COLS / CHUNK_COLS chunks. The values are a deterministic
 * function of (row, col) so the serial reader can recompute them. Exit status 0 = written. */
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESID_FILTER_ID 32900
#define ROWS 32
#define COLS 96
#define CHUNK_COLS 32

static float value(int row, int col) {
    return (float)(100.0 * sin(0.05 * row) * cos(0.03 * col) + 0.5 * row + 0.001 * (row * COLS + col));
}

#define CHECK(expr)                                                                     \
    do {                                                                                \
        if ((expr) < 0) {                                                               \
            fprintf(stderr, "mpi_write rank %d: %s failed (line %d)\n", rank, #expr,    \
                    __LINE__);                                                          \
            MPI_Abort(MPI_COMM_WORLD, 2);                                               \
        }                                                                               \
    } while (0)

int main(int argc, char **argv) {
    int rank, nranks, i, j;
    const char *path;
    double bound;
    uint64_t bits;
    unsigned cd[4];
    static float buf[ROWS][COLS];
    hid_t fapl, file, space, mspace, dcpl, dxpl, dset;
    hsize_t dims[2], chunk[2] = {ROWS, CHUNK_COLS}, start[2], count[2] = {ROWS, COLS};

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    path = argc > 1 ? argv[1] : "mpi.h5";
    bound = argc > 2 ? atof(argv[2]) : 1e-2;

    memcpy(&bits, &bound, sizeof bits);
    cd[0] = 1;                                  /* cd_values layout version */
    cd[1] = 0;                                  /* abs */
    cd[2] = (unsigned)(bits >> 32);             /* bound, high word */
    cd[3] = (unsigned)(bits & 0xFFFFFFFFu);     /* bound, low word */

    /* The file is opened with the MPI-IO driver by every rank. */
    CHECK(fapl = H5Pcreate(H5P_FILE_ACCESS));
    CHECK(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    CHECK(file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl));

    dims[0] = (hsize_t)nranks * ROWS;
    dims[1] = COLS;
    CHECK(space = H5Screate_simple(2, dims, NULL));
    CHECK(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    CHECK(H5Pset_chunk(dcpl, 2, chunk));
    CHECK(H5Pset_filter(dcpl, RESID_FILTER_ID, H5Z_FLAG_MANDATORY, 4, cd));
    if (H5Zfilter_avail(RESID_FILTER_ID) <= 0) {
        fprintf(stderr, "mpi_write: filter %d not available: set HDF5_PLUGIN_PATH\n", RESID_FILTER_ID);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* Dataset creation is collective: every rank calls it with the same arguments. */
    CHECK(dset = H5Dcreate2(file, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));

    for (i = 0; i < ROWS; i++)
        for (j = 0; j < COLS; j++) buf[i][j] = value(rank * ROWS + i, j);
    start[0] = (hsize_t)rank * ROWS;
    start[1] = 0;
    CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL));
    CHECK(mspace = H5Screate_simple(2, count, NULL));
    /* Filtered datasets can only be written collectively. */
    CHECK(dxpl = H5Pcreate(H5P_DATASET_XFER));
    CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, space, dxpl, buf));

    CHECK(H5Pclose(dxpl));
    CHECK(H5Sclose(mspace));
    CHECK(H5Sclose(space));
    CHECK(H5Pclose(dcpl));
    CHECK(H5Dclose(dset));
    CHECK(H5Fclose(file));
    CHECK(H5Pclose(fapl));
    if (rank == 0) printf("mpi_write: %d ranks wrote %s:/x (%d x %d float32, abs bound %g)\n",
                          nranks, path, nranks * ROWS, COLS, bound);
    MPI_Finalize();
    return 0;
}
