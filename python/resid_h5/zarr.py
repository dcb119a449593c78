"""resid as a Zarr v3 array-to-bytes codec, name ``"resid"`` (registered through the
``zarr.codecs`` entry point, so a store written with it opens wherever resid_h5 is installed).

    import zarr
    from resid_h5.zarr import ResidZarrCodec
    z = zarr.create_array("t.zarr", shape=a.shape, chunks=(16, 64, 64), dtype="f4",
                          serializer=ResidZarrCodec(rel=1e-3), compressors=None)
    z[...] = a

It takes the place of Zarr's ``bytes`` codec (the array is coded as values, not bytes), with
the same bound and options as :class:`resid_h5.Resid`, and stores the bytes the HDF5 filter
stores for a chunk of the same shape. Metadata: ``{"name": "resid", "configuration":
{"rel": 0.001}}``.
"""

import asyncio
from dataclasses import dataclass

from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from . import Resid, _codec

__all__ = ["ResidZarrCodec"]


@dataclass(frozen=True)
class ResidZarrCodec(ArrayBytesCodec):
    """Error-bounded lossy array-to-bytes codec for float32/float64 arrays."""

    is_fixed_size = False
    configuration: dict

    def __init__(self, abs=None, rel=None, nrmse=None, psnr=None, **options):
        args = Resid(abs=abs, rel=rel, nrmse=nrmse, psnr=psnr, **options)
        object.__setattr__(self, "configuration", args.config())

    @property
    def args(self):
        return Resid(**self.configuration)

    @classmethod
    def from_dict(cls, data):
        _, configuration = parse_named_configuration(data, "resid")
        return cls(**configuration)

    def to_dict(self):
        return {"name": "resid", "configuration": dict(self.configuration)}

    def validate(self, *, shape, dtype, chunk_grid):
        native = dtype.to_native_dtype()
        if native.kind != "f" or native.itemsize not in (4, 8):
            raise ValueError(f"resid: the array's element type is {native}, not a 4- or 8-byte "
                             "float; resid codes float32 and float64")

    async def _decode_single(self, chunk_bytes, chunk_spec):
        array = await asyncio.to_thread(_codec.decode, self.args, chunk_bytes.to_bytes())
        want = chunk_spec.dtype.to_native_dtype()
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(
            array.reshape(chunk_spec.shape).astype(want, copy=False))

    async def _encode_single(self, chunk_array, chunk_spec):
        data = await asyncio.to_thread(_codec.encode, self.args, chunk_array.as_ndarray_like())
        return chunk_spec.prototype.buffer.from_bytes(data)

    def compute_encoded_size(self, input_byte_length, _chunk_spec):
        raise NotImplementedError("resid's output size depends on the data")
