/*
 * resid.h: the chunk codec of libh5resid.so as a C ABI (version 1).
 *
 * libh5resid.so is the resid HDF5 filter plugin (filter 32900); it also exports these
 * functions, which code one chunk exactly as the filter does (the same bytes: they call the
 * filter's own encode and decode steps) without HDF5 being loaded. Use them to code chunks
 * on threads of your own (HDF5 runs a dataset's filters one chunk at a time on one thread)
 * and move them with H5Dwrite_chunk / H5Dread_chunk, or from a codec of another container
 * format. resid_h5.write / resid_h5.read (python/) use them through ctypes. Link with
 * -L<dir> -lh5resid, or dlopen the plugin; it does not link libhdf5.
 *
 * cd_values is always the FULL form the filter receives: the user's words (README,
 * "Parameters") followed by what the filter's set_local appended: element type (1 float32,
 * 2 float64), rank, the chunk dimensions (C order), then 1 and the fill value's bits (high
 * word, low word; a float32's in the low word). Read it from a dataset with
 * H5Pget_filter_by_id2(dcpl, 32900, ...) or build it with resid_local_cd_values.
 *
 * Every function is thread-safe. Functions returning int return 0 on success and -1 on
 * failure; resid_last_error() then gives the message ("resid: ...", the text the filter puts
 * on HDF5's error stack, with the codec's error code). No panic crosses this boundary.
 */
#ifndef RESID_H
#define RESID_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version: 1. */
uint32_t resid_capi_version(void);

/*
 * Encodes one whole chunk: in_len = product of the chunk dimensions x element size, C order,
 * little-endian floats; an edge chunk padded with the dataset's fill value as HDF5 pads it
 * (zeros when the fill time is "never"). On success *out (free it with resid_free) holds the
 * *out_len bytes to store with filter mask 0; a chunk that does not code smaller comes back
 * as the codec's "stored" container, to be stored as is. On failure *out = NULL, *out_len = 0.
 */
int resid_encode_chunk(const uint32_t *cd_values, size_t n_cd, const void *in, size_t in_len,
                       void **out, size_t *out_len);

/*
 * Decodes one stored chunk (filter mask 0) into out, which must hold exactly one chunk
 * (out_len = product of the chunk dimensions x element size).
 */
int resid_decode_chunk(const uint32_t *cd_values, size_t n_cd, const void *in, size_t in_len,
                       void *out, size_t out_len);

/* Frees a buffer from resid_encode_chunk; NULL is ignored. */
void resid_free(void *p);

/*
 * The calling thread's last error message; "" when no call on this thread has failed. Valid
 * until the thread's next failing call; copy it to keep it.
 */
const char *resid_last_error(void);

/*
 * The full cd_values the filter's set_local stores for a dataset: user = the user's words
 * (4 to 8), dtype 1 (float32) or 2 (float64), the rank and chunk dimensions, and when
 * has_fill is non-zero the fill value's bits (a float32's in the low 32 bits). On entry
 * *out_len is the capacity of out (in words), on return the number of words the cd_values
 * need (also on failure because out was too small: call with out = NULL, *out_len = 0 to
 * ask for the size; at most 8 + 2 + 32 + 3).
 */
int resid_local_cd_values(const uint32_t *user, size_t n_user, uint32_t dtype, size_t rank,
                          const size_t *dims, int has_fill, uint64_t fill_bits, uint32_t *out,
                          size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* RESID_H */
