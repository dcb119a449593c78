//! Helpers the CLI's integration tests share.

/// (filter mask, stored bytes) of chunk `i` of `ds`, read as HDF5 stored it.
pub fn raw_chunk(ds: &hdf5::Dataset, i: usize) -> (u32, Vec<u8>) {
    let info = ds.chunk_info(i).unwrap();
    let mut buf = vec![0u8; info.size as usize];
    let mut mask = 0u32;
    // SAFETY: `offset` has one entry per dimension, `buf` holds the chunk's stored size.
    let rc = unsafe {
        hdf5_sys::h5d::H5Dread_chunk(
            ds.id(),
            hdf5_sys::h5p::H5P_DEFAULT,
            info.offset.as_ptr(),
            &mut mask,
            buf.as_mut_ptr().cast(),
        )
    };
    assert!(rc >= 0, "H5Dread_chunk failed on chunk {i}");
    (mask, buf)
}
