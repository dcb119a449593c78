/* Writes and reads a chunked float dataset through the resid filter (id 32900) with the plain
 * HDF5 C API, as a C user would, and checks the absolute error bound.
 *
 *   cc roundtrip.c $(pkg-config --cflags --libs hdf5) -lm -o roundtrip
 *   HDF5_PLUGIN_PATH=target/release ./roundtrip out.h5 [bound]
 *
 * Exit status: 0 = round trip within the bound, 1 = bound violated or HDF5 error. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESID_FILTER_ID 32900
#define NX 37 /* not a multiple of the chunk: edge chunks */
#define NY 50
#define CX 16
#define CY 16

/* The bound as (high word, low word) of its IEEE 754 bits, the order resid's cd_values use. */
static void bound_words(double bound, unsigned *hi, unsigned *lo) {
    uint64_t bits;
    memcpy(&bits, &bound, sizeof bits);
    *hi = (unsigned)(bits >> 32);
    *lo = (unsigned)(bits & 0xFFFFFFFFu);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "roundtrip.h5";
    double bound = argc > 2 ? atof(argv[2]) : 1e-3;
    static float in[NX][NY], out[NX][NY];
    hsize_t dims[2] = {NX, NY}, chunk[2] = {CX, CY};
    unsigned cd[4] = {1 /* layout version */, 0 /* abs */, 0, 0};
    hid_t file, space, dcpl, dset;
    double maxerr = 0.0;
    int i, j, avail;

    bound_words(bound, &cd[2], &cd[3]);
    for (i = 0; i < NX; i++)
        for (j = 0; j < NY; j++)
            in[i][j] = (float)(sin(0.1 * i) * cos(0.07 * j) * 50.0 + 0.01 * (i * NY + j));

    file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    space = H5Screate_simple(2, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (file < 0 || space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 2, chunk) < 0) return 1;
    if (H5Pset_filter(dcpl, RESID_FILTER_ID, H5Z_FLAG_MANDATORY, 4, cd) < 0) return 1;
    avail = H5Zfilter_avail(RESID_FILTER_ID);
    if (avail <= 0) {
        fprintf(stderr, "resid filter not available (set HDF5_PLUGIN_PATH)\n");
        return 1;
    }
    dset = H5Dcreate2(file, "T", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset < 0) return 1;
    if (H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, in) < 0) return 1;
    H5Dclose(dset);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(file);

    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    dset = H5Dopen2(file, "T", H5P_DEFAULT);
    if (dset < 0) return 1;
    /* The stored pipeline holds the filter with the chunk description appended: element type,
       rank, chunk dims, then the padding flag and the fill value's bits (0 here). */
    dcpl = H5Dget_create_plist(dset);
    {
        unsigned flags, stored[64];
        size_t n = 64;
        if (H5Pget_filter_by_id2(dcpl, RESID_FILTER_ID, &flags, &n, stored, 0, NULL, NULL) < 0)
            return 1;
        if (n != 8 + 2 + 2 + 3 || stored[8] != 1 || stored[9] != 2 || stored[10] != CX ||
            stored[11] != CY || stored[12] != 1 || stored[13] != 0 || stored[14] != 0) {
            fprintf(stderr, "unexpected stored cd_values (n = %zu)\n", n);
            return 1;
        }
    }
    H5Pclose(dcpl);
    if (H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) return 1;
    H5Dclose(dset);
    H5Fclose(file);

    for (i = 0; i < NX; i++)
        for (j = 0; j < NY; j++) {
            double e = fabs((double)in[i][j] - (double)out[i][j]);
            if (!(e <= maxerr)) maxerr = e; /* also catches NaN */
        }
    printf("max_abs_err=%.9g bound=%.9g\n", maxerr, bound);
    return maxerr <= bound ? 0 : 1;
}
