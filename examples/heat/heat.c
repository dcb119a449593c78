/* A small simulation code that stores its output through the resid filter (HDF5 filter 32900).
 *
 * Solves the 2D heat equation u_t = alpha (u_xx + u_yy) on an NX x NY grid with an explicit
 * 5-point stencil (fixed boundaries), and appends every output step to a chunked dataset
 * "/T" of shape (steps, NX, NY) whose first dimension is unlimited: one chunk per step, as a
 * model appends one record per output time. The data are float32; the bound is given on the
 * command line. At the end the file is read back and the program reports the compression
 * ratio and the largest error against what it wrote.
 *
 *   cc -O2 examples/heat/heat.c $(pkg-config --cflags --libs hdf5) -lm -o heat
 *   HDF5_PLUGIN_PATH=$PWD/target/release ./heat heat.h5 rel 1e-3 [NX NY STEPS]
 *
 * MODE is abs | rel | nrmse | psnr (cd_values word 1); rel and the others are per chunk, here
 * per time step. Exit status: 0 = every value within its bound, 1 = bound violated,
 * 2 = usage or HDF5 error (for instance the plugin was not found: set HDF5_PLUGIN_PATH). */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESID_FILTER_ID 32900

#define CHECK(expr)                                                        \
    do {                                                                   \
        if ((expr) < 0) {                                                  \
            fprintf(stderr, "heat: HDF5 call failed: %s (line %d)\n", #expr, __LINE__); \
            exit(2);                                                       \
        }                                                                  \
    } while (0)

static int mode_code(const char *m) {
    if (!strcmp(m, "abs")) return 0;
    if (!strcmp(m, "rel")) return 1;
    if (!strcmp(m, "nrmse")) return 2;
    if (!strcmp(m, "psnr")) return 3;
    return -1;
}

/* Explicit Euler step of the heat equation; u and v are nx*ny, boundaries stay fixed. */
static void step(const double *u, double *v, int nx, int ny, double r) {
    int i, j;
    memcpy(v, u, sizeof(double) * (size_t)nx * (size_t)ny);
    for (i = 1; i < nx - 1; i++)
        for (j = 1; j < ny - 1; j++) {
            const double *c = u + (size_t)i * ny + j;
            v[(size_t)i * ny + j] = *c + r * (c[-ny] + c[ny] + c[-1] + c[1] - 4.0 * *c);
        }
}

int main(int argc, char **argv) {
    const char *path, *mode;
    double bound, r = 0.2; /* alpha dt / dx^2: stable below 0.25 in 2D */
    int nx = 128, ny = 96, steps = 40, inner = 20, code, s, i, k;
    unsigned cd[4];
    uint64_t bits;
    double *u, *v, *tmp, maxerr = 0.0, worst = 0.0, sqerr = 0.0;
    float *frames, *back;
    size_t n;
    hid_t file, space, mspace, dcpl, dset;
    hsize_t dims[3], maxdims[3] = {H5S_UNLIMITED, 0, 0}, chunk[3], start[3] = {0, 0, 0}, count[3];
    hsize_t stored;

    if (argc < 4 || (code = mode_code(argv[2])) < 0 || !((bound = atof(argv[3])) > 0)) {
        fprintf(stderr, "usage: %s OUT.h5 abs|rel|nrmse|psnr BOUND [NX NY STEPS]\n"
                        "  e.g. HDF5_PLUGIN_PATH=target/release %s heat.h5 rel 1e-3\n",
                argv[0], argv[0]);
        return 2;
    }
    path = argv[1];
    mode = argv[2];
    if (argc > 6) {
        nx = atoi(argv[4]);
        ny = atoi(argv[5]);
        steps = atoi(argv[6]);
        if (nx < 3 || ny < 3 || steps < 1) {
            fprintf(stderr, "heat: NX, NY must be >= 3 and STEPS >= 1\n");
            return 2;
        }
    }
    n = (size_t)nx * (size_t)ny;
    u = malloc(n * sizeof *u);
    v = malloc(n * sizeof *v);
    frames = malloc(n * (size_t)steps * sizeof *frames);
    back = malloc(n * (size_t)steps * sizeof *back);
    if (!u || !v || !frames || !back) {
        fprintf(stderr, "heat: out of memory\n");
        return 2;
    }

    /* Initial state: a smooth background, two hot spots and one cold spot. */
    for (i = 0; i < nx; i++)
        for (k = 0; k < ny; k++) {
            double x = (double)i / nx, y = (double)k / ny;
            u[(size_t)i * ny + k] = 20.0 + 5.0 * sin(3.0 * x) * cos(2.0 * y) +
                                    80.0 * exp(-((x - 0.3) * (x - 0.3) + (y - 0.4) * (y - 0.4)) / 0.004) +
                                    60.0 * exp(-((x - 0.7) * (x - 0.7) + (y - 0.7) * (y - 0.7)) / 0.01) -
                                    30.0 * exp(-((x - 0.6) * (x - 0.6) + (y - 0.2) * (y - 0.2)) / 0.002);
        }

    /* The resid parameters: layout version 1, the mode, the bound as (high word, low word). */
    memcpy(&bits, &bound, sizeof bits);
    cd[0] = 1;
    cd[1] = (unsigned)code;
    cd[2] = (unsigned)(bits >> 32);
    cd[3] = (unsigned)(bits & 0xFFFFFFFFu);

    CHECK(file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    dims[0] = 0; dims[1] = (hsize_t)nx; dims[2] = (hsize_t)ny;
    maxdims[1] = dims[1]; maxdims[2] = dims[2];
    chunk[0] = 1; chunk[1] = dims[1]; chunk[2] = dims[2];
    CHECK(space = H5Screate_simple(3, dims, maxdims));
    CHECK(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    CHECK(H5Pset_chunk(dcpl, 3, chunk));
    CHECK(H5Pset_filter(dcpl, RESID_FILTER_ID, H5Z_FLAG_MANDATORY, 4, cd));
    if (H5Zfilter_avail(RESID_FILTER_ID) <= 0) {
        fprintf(stderr, "heat: filter %d (resid) not available: set HDF5_PLUGIN_PATH to the "
                        "directory of libh5resid.so\n", RESID_FILTER_ID);
        return 2;
    }
    CHECK(dset = H5Dcreate2(file, "T", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    CHECK(H5Sclose(space));
    count[0] = 1; count[1] = dims[1]; count[2] = dims[2];
    CHECK(mspace = H5Screate_simple(3, count, NULL));

    for (s = 0; s < steps; s++) {
        float *f = frames + (size_t)s * n;
        hid_t fspace;
        for (k = 0; k < inner; k++) {
            step(u, v, nx, ny, r);
            tmp = u; u = v; v = tmp;
        }
        for (i = 0; i < (int)n; i++) f[i] = (float)u[i];
        /* Append one record: grow the time dimension, write the new slab. */
        dims[0] = (hsize_t)s + 1;
        CHECK(H5Dset_extent(dset, dims));
        CHECK(fspace = H5Dget_space(dset));
        start[0] = (hsize_t)s;
        CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, f));
        CHECK(H5Sclose(fspace));
    }
    stored = H5Dget_storage_size(dset);
    CHECK(H5Sclose(mspace));
    CHECK(H5Dclose(dset));
    CHECK(H5Pclose(dcpl));
    CHECK(H5Fclose(file));

    /* Read everything back (a fresh open: the data come through the decoder). */
    CHECK(file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT));
    CHECK(dset = H5Dopen2(file, "T", H5P_DEFAULT));
    CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, back));
    CHECK(H5Dclose(dset));
    CHECK(H5Fclose(file));

    for (s = 0; s < steps; s++) {
        const float *f = frames + (size_t)s * n, *b = back + (size_t)s * n;
        double lo = f[0], hi = f[0], e = 0.0, allowed;
        for (i = 0; i < (int)n; i++) {
            double d = fabs((double)f[i] - (double)b[i]);
            if (f[i] < lo) lo = f[i];
            if (f[i] > hi) hi = f[i];
            if (d > e) e = d;
            sqerr += d * d;
        }
        /* abs: the bound itself; rel: per chunk (= per step) bound * value range. NRMSE and
         * PSNR bound the RMSE, not each value: report the largest error only. */
        allowed = code == 0 ? bound : code == 1 ? bound * (hi - lo) : INFINITY;
        if (e > maxerr) maxerr = e;
        if (e / allowed > worst) worst = e / allowed;
    }
    printf("heat: %d steps of %dx%d float32, %s bound %g\n", steps, nx, ny, mode, bound);
    printf("heat: raw %zu bytes, stored %llu bytes, ratio %.2f\n", n * (size_t)steps * sizeof(float),
           (unsigned long long)stored, (double)(n * (size_t)steps * sizeof(float)) / (double)stored);
    printf("heat: max error %.6g, rmse %.6g, max error / allowed %.4f\n", maxerr,
           sqrt(sqerr / ((double)n * steps)), worst);
    free(u); free(v); free(frames); free(back);
    if (worst > 1.0) {
        printf("heat: BOUND VIOLATED\n");
        return 1;
    }
    printf("heat: ok\n");
    return 0;
}
