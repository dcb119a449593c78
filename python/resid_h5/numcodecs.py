"""resid as a numcodecs codec, id ``"resid"``: for Zarr v2 arrays and anything else that takes
numcodecs codecs.

    import numcodecs, zarr
    codec = numcodecs.get_codec({"id": "resid", "rel": 1e-3})   # through the entry point
    z = zarr.create_array("t.zarr", shape=a.shape, chunks=(16, 64, 64), dtype="f4",
                          compressors=[codec], zarr_format=2)

It takes the same bound and options as :class:`resid_h5.Resid` and stores the bytes the HDF5
filter stores for a chunk of the same shape. Encoding needs a float32/float64 array (numcodecs
hands one over, with its shape); decoding reads shape and type from the chunk's own header.
"""

import numcodecs.abc
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray, ndarray_copy

from . import Resid, _codec

__all__ = ["ResidCodec"]


class ResidCodec(numcodecs.abc.Codec):
    """Error-bounded lossy codec for float32/float64 arrays. Exactly one bound: ``abs=``,
    ``rel=``, ``nrmse=`` or ``psnr=``; options as :class:`resid_h5.Resid`."""

    codec_id = "resid"

    def __init__(self, abs=None, rel=None, nrmse=None, psnr=None, **options):
        self.args = Resid(abs=abs, rel=rel, nrmse=nrmse, psnr=psnr, **options)

    def encode(self, buf):
        return _codec.encode(self.args, ensure_ndarray(buf))

    def decode(self, buf, out=None):
        data = ensure_contiguous_ndarray(buf).view("u1")
        if out is None:
            return _codec.decode(self.args, data)
        return ndarray_copy(_codec.decode(self.args, data), out)

    def get_config(self):
        return {"id": self.codec_id, **self.args.config()}

    def __repr__(self):
        return f"ResidCodec({', '.join(f'{k}={v!r}' for k, v in self.args.config().items())})"
