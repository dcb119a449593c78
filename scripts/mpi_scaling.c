/* Weak scaling of parallel HDF5 writes through the resid filter (scripts/mpi_scaling runs it).
 * Every rank writes the same number of bytes: its own PLANES x NY x NX float32 slab of ONE
 * dataset (nranks*PLANES, NY, NX), in chunks (CZ, 64, 64) that no two ranks share, with one
 * collective H5Dwrite (HDF5 writes filtered datasets in parallel only collectively).
 *
 *   mpicc -O2 scripts/mpi_scaling.c $(pkg-config --cflags --libs hdf5-openmpi) -lm -o mpi_scaling
 *   HDF5_PLUGIN_PATH=$PWD/target/release mpirun -n 2 -x HDF5_PLUGIN_PATH ./mpi_scaling out.h5 abs 1e-3
 *
 * Arguments: out.h5 none|abs|rel [bound] [planes per rank] [chunk depth CZ]. The timed part is
 * H5Fcreate .. H5Fclose (create, collective write, close), after an MPI_Barrier; the wall time
 * is the slowest rank's, the CPU time the sum over ranks (MPI's busy waiting included). Then
 * every rank reopens the file, reads its own slab back collectively and checks the largest
 * error against the bound (abs: bound; rel: bound times the dataset's value range, looser than
 * the per-chunk rel bound, which is relative to each chunk's range).
 * Rank 0 prints one line, `mpi_scaling: key value ...`; exit status 1 when the error exceeds
 * the bound, 2 on an HDF5/MPI error. */
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RESID_FILTER_ID 32900
#define NY 256
#define NX 256

#define CHECK(expr)                                                                          \
    do {                                                                                     \
        if ((expr) < 0) {                                                                    \
            fprintf(stderr, "mpi_scaling rank %d: %s failed (line %d)\n", rank, #expr,       \
                    __LINE__);                                                               \
            MPI_Abort(MPI_COMM_WORLD, 2);                                                    \
        }                                                                                    \
    } while (0)

/* A smooth field plus a little deterministic noise (a hash of the global index). */
static float value(long z, long y, long x) {
    uint64_t h = (uint64_t)((z * NY + y) * NX + x) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    double noise = (double)(h >> 11) / 9007199254740992.0 - 0.5; /* [-0.5, 0.5) */
    return (float)(sin(0.02 * z + 0.3) * cos(0.015 * y) * sin(0.011 * x + 0.5) + 0.2 * cos(0.004 * z) +
                   0.002 * noise);
}

int main(int argc, char **argv) {
    int rank, nranks, mode, bad = 0;
    const char *path, *mode_s;
    double bound, t0, t1, wall, c0, c1, cpu, err = 0, gerr, glo, ghi, limit;
    double lo = INFINITY, hi = -INFINITY;
    long planes, cz, n, i, z, y, x;
    uint64_t bits;
    unsigned cd[4];
    float *buf, *back;
    hid_t fapl, file, space, mspace, dcpl, dxpl, dset;
    hsize_t dims[3], chunk[3], start[3], count[3], stored = 0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: mpi_scaling out.h5 none|abs|rel [bound] [planes] [cz]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    path = argv[1];
    mode_s = argv[2];
    mode = !strcmp(mode_s, "none") ? -1 : !strcmp(mode_s, "abs") ? 0 : !strcmp(mode_s, "rel") ? 1 : -2;
    bound = argc > 3 ? atof(argv[3]) : 1e-3;
    planes = argc > 4 ? atol(argv[4]) : 128; /* 128 x 256 x 256 float32 = 32 MiB per rank */
    cz = argc > 5 ? atol(argv[5]) : 64;
    if (mode == -2 || bound <= 0 || planes <= 0 || cz <= 0 || planes % cz) {
        if (rank == 0) fprintf(stderr, "mpi_scaling: bad arguments (planes must be a multiple of cz)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (mode >= 0 && H5Zfilter_avail(RESID_FILTER_ID) <= 0) {
        if (rank == 0)
            fprintf(stderr, "mpi_scaling: filter %d not available: set HDF5_PLUGIN_PATH\n", RESID_FILTER_ID);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    n = planes * NY * NX;
    buf = malloc((size_t)n * sizeof *buf);
    back = malloc((size_t)n * sizeof *back);
    if (!buf || !back) MPI_Abort(MPI_COMM_WORLD, 2);
    for (z = 0; z < planes; z++)
        for (y = 0; y < NY; y++)
            for (x = 0; x < NX; x++) {
                float v = value(rank * planes + z, y, x);
                buf[(z * NY + y) * NX + x] = v;
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
    MPI_Allreduce(&lo, &glo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&hi, &ghi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    memcpy(&bits, &bound, sizeof bits);
    cd[0] = 1;                              /* cd_values layout version */
    cd[1] = (unsigned)(mode > 0);           /* 0 abs, 1 rel */
    cd[2] = (unsigned)(bits >> 32);         /* bound, high word */
    cd[3] = (unsigned)(bits & 0xFFFFFFFFu); /* bound, low word */
    dims[0] = (hsize_t)nranks * planes;
    dims[1] = NY;
    dims[2] = NX;
    chunk[0] = (hsize_t)cz;
    chunk[1] = 64;
    chunk[2] = 64;
    start[0] = (hsize_t)rank * planes;
    start[1] = start[2] = 0;
    count[0] = (hsize_t)planes;
    count[1] = NY;
    count[2] = NX;

    CHECK(fapl = H5Pcreate(H5P_FILE_ACCESS));
    CHECK(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    CHECK(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    CHECK(H5Pset_chunk(dcpl, 3, chunk));
    if (mode >= 0) CHECK(H5Pset_filter(dcpl, RESID_FILTER_ID, H5Z_FLAG_MANDATORY, 4, cd));
    CHECK(dxpl = H5Pcreate(H5P_DATASET_XFER));
    CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    CHECK(mspace = H5Screate_simple(3, count, NULL));

    /* Timed: create, collective write, close. */
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    c0 = (double)clock() / CLOCKS_PER_SEC;
    CHECK(file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    CHECK(space = H5Screate_simple(3, dims, NULL));
    CHECK(dset = H5Dcreate2(file, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL));
    CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, space, dxpl, buf));
    CHECK(H5Sclose(space));
    CHECK(H5Dclose(dset));
    CHECK(H5Fclose(file));
    t1 = MPI_Wtime() - t0;
    c1 = (double)clock() / CLOCKS_PER_SEC - c0;
    MPI_Reduce(&t1, &wall, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&c1, &cpu, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);

    /* Read back: every rank its own slab, collectively; the largest error over all ranks. */
    CHECK(file = H5Fopen(path, H5F_ACC_RDONLY, fapl));
    CHECK(dset = H5Dopen2(file, "x", H5P_DEFAULT));
    CHECK(space = H5Dget_space(dset));
    CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL));
    CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, mspace, space, dxpl, back));
    stored = H5Dget_storage_size(dset);
    CHECK(H5Sclose(space));
    CHECK(H5Dclose(dset));
    CHECK(H5Fclose(file));
    for (i = 0; i < n; i++) {
        double e = fabs((double)back[i] - (double)buf[i]);
        if (!(e <= err)) err = isnan(e) ? INFINITY : e;
    }
    MPI_Reduce(&err, &gerr, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

    if (rank == 0) {
        double mb = (double)n * nranks * sizeof(float) / 1e6;
        limit = mode < 0 ? 0 : mode == 0 ? bound : bound * (ghi - glo);
        bad = !(gerr <= limit);
        printf("mpi_scaling: ranks %d mode %s bound %g chunk %ldx64x64 mb %.1f wall %.4f cpu %.4f "
               "stored %llu raw %.0f ratio %.3f maxerr %.3g limit %.3g %s\n",
               nranks, mode_s, mode < 0 ? 0 : bound, cz, mb, wall, cpu, (unsigned long long)stored,
               mb * 1e6, mb * 1e6 / (double)stored, gerr, limit, bad ? "FAIL" : "ok");
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    CHECK(H5Sclose(mspace));
    CHECK(H5Pclose(dxpl));
    CHECK(H5Pclose(dcpl));
    CHECK(H5Pclose(fapl));
    free(buf);
    free(back);
    MPI_Finalize();
    return bad ? 1 : 0;
}
