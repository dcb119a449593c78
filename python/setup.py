"""Builds resid_h5 with the resid HDF5 plugin inside it.

setuptools-rust compiles the plugin crate (`plugin/`, cargo, release) and puts the library in
the package as `resid_h5/plugins/libh5resid.abi3.so`, so an installed wheel needs neither the
checkout nor `HDF5_PLUGIN_PATH`. The library does not link Python (it is plain C ABI, loaded by
HDF5 and by ctypes), hence one abi3 wheel for every CPython 3.8+ (setup.cfg).

Cargo builds into `<checkout>/target/wheel` (or `$CARGO_TARGET_DIR`), apart from
`target/release`, so that `pip install ./python` and `cargo build --release` do not rebuild
each other's plugin. The wheel also installs `resid_h5.pth`, which registers the filter in
every Python process the moment it imports h5py (see _resid_h5_hook.py).
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustExtension, Strip

HERE = Path(__file__).resolve().parent
MANIFEST = HERE.parent / "plugin" / "Cargo.toml"
if not MANIFEST.is_file():
    raise SystemExit(f"resid_h5 is built from a resid checkout: {MANIFEST} not found "
                     "(build the wheel with `pip wheel ./python` in the checkout)")


class BuildPy(build_py):
    """Also puts resid_h5.pth at the top of the wheel (site-packages)."""

    def run(self):
        super().run()
        self.copy_file(str(HERE / "resid_h5.pth"), str(Path(self.build_lib) / "resid_h5.pth"))


setup(
    cmdclass={"build_py": BuildPy},
    rust_extensions=[
        RustExtension(
            "resid_h5.plugins.libh5resid",
            path=str(MANIFEST),
            binding=Binding.NoBinding,
            strip=Strip.Debug,
            env={**os.environ,
                 "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR")
                 or str(HERE.parent / "target" / "wheel")},
        )
    ],
)
