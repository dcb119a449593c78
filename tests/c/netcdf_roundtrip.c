/* Writes a netCDF-4 variable through the resid filter (HDF5 filter 32900) with the netCDF-C
 * API (nc_def_var_filter, netCDF >= 4.7.4), reads it back and checks the absolute bound.
 *
 *   cc tests/c/netcdf_roundtrip.c $(pkg-config --cflags --libs netcdf) -lm -o nc_roundtrip
 *   HDF5_PLUGIN_PATH=$PWD/target/release ./nc_roundtrip out.nc [bound]
 *
 * netCDF-4 files are HDF5 files: the variable is an HDF5 dataset with the filter in its
 * pipeline, so h5dump, h5py and resid inspect see it too. Exit status: 0 = within the bound,
 * 1 = bound violated, 2 = netCDF error (e.g. NC_ENOFILTER: the plugin was not found). */
#include <math.h>
#include <netcdf.h>
#include <netcdf_filter.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESID_FILTER_ID 32900
#define NT 6
#define NLAT 45
#define NLON 90

#define NC(expr)                                                                      \
    do {                                                                              \
        int rc_ = (expr);                                                             \
        if (rc_ != NC_NOERR) {                                                        \
            fprintf(stderr, "nc_roundtrip: %s: %s\n", #expr, nc_strerror(rc_));       \
            exit(2);                                                                  \
        }                                                                             \
    } while (0)

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "roundtrip.nc";
    double bound = argc > 2 ? atof(argv[2]) : 1e-2, maxerr = 0.0;
    static float in[NT][NLAT][NLON], out[NT][NLAT][NLON];
    unsigned params[4], ids[8], got[16];
    size_t chunks[3] = {1, NLAT, NLON}, nfilters = 0, nparams = 0;
    int ncid, dims[3], varid, t, i, j;
    uint64_t bits;

    for (t = 0; t < NT; t++)
        for (i = 0; i < NLAT; i++)
            for (j = 0; j < NLON; j++)
                in[t][i][j] = (float)(273.15 + 30.0 * cos(M_PI * (i - NLAT / 2.0) / NLAT) +
                                      5.0 * sin(2.0 * M_PI * j / NLON + 0.3 * t));

    memcpy(&bits, &bound, sizeof bits);
    params[0] = 1;                                  /* cd_values layout version */
    params[1] = 0;                                  /* abs */
    params[2] = (unsigned)(bits >> 32);             /* bound, high word */
    params[3] = (unsigned)(bits & 0xFFFFFFFFu);     /* bound, low word */

    NC(nc_create(path, NC_CLOBBER | NC_NETCDF4, &ncid));
    NC(nc_def_dim(ncid, "time", NC_UNLIMITED, &dims[0]));
    NC(nc_def_dim(ncid, "lat", NLAT, &dims[1]));
    NC(nc_def_dim(ncid, "lon", NLON, &dims[2]));
    NC(nc_def_var(ncid, "tas", NC_FLOAT, 3, dims, &varid));
    NC(nc_def_var_chunking(ncid, varid, NC_CHUNKED, chunks));
    NC(nc_def_var_filter(ncid, varid, RESID_FILTER_ID, 4, params));
    NC(nc_put_att_text(ncid, varid, "units", 1, "K"));
    NC(nc_enddef(ncid));
    {
        size_t start[3] = {0, 0, 0}, count[3] = {NT, NLAT, NLON};
        NC(nc_put_vara_float(ncid, varid, start, count, &in[0][0][0]));
    }
    NC(nc_close(ncid));

    NC(nc_open(path, NC_NOWRITE, &ncid));
    NC(nc_inq_varid(ncid, "tas", &varid));
    NC(nc_inq_var_filter_ids(ncid, varid, &nfilters, ids));
    if (nfilters != 1 || ids[0] != RESID_FILTER_ID) {
        fprintf(stderr, "nc_roundtrip: expected filter %d, found %zu filters (first %u)\n",
                RESID_FILTER_ID, nfilters, nfilters ? ids[0] : 0);
        return 1;
    }
    NC(nc_inq_var_filter_info(ncid, varid, RESID_FILTER_ID, &nparams, NULL));
    if (nparams > 16) nparams = 16;
    NC(nc_inq_var_filter_info(ncid, varid, RESID_FILTER_ID, &nparams, got));
    NC(nc_get_var_float(ncid, varid, &out[0][0][0]));
    NC(nc_close(ncid));

    for (t = 0; t < NT; t++)
        for (i = 0; i < NLAT; i++)
            for (j = 0; j < NLON; j++) {
                double d = fabs((double)in[t][i][j] - (double)out[t][i][j]);
                if (d > maxerr) maxerr = d;
            }
    printf("nc_roundtrip: filter %u with %zu parameters (%u %u %u %u ...), max error %g, bound %g\n",
           ids[0], nparams, got[0], got[1], got[2], got[3], maxerr, bound);
    if (memcmp(got, params, sizeof params) != 0) {
        fprintf(stderr, "nc_roundtrip: stored parameters differ from the ones given\n");
        return 1;
    }
    return maxerr <= bound ? 0 : 1;
}
