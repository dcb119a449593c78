"""Build hook: remembers the checkout and, on request, bundles the plugin into the package.

`RESID_BUNDLE_PLUGIN=/path/to/libh5resid.so pip install ./python` copies that library into
the installed package; without it the package records where the checkout is, so that
`<checkout>/target/release/libh5resid.so` is found at import time.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPy(build_py):
    def run(self):
        super().run()
        out = Path(self.build_lib) / "resid_h5"
        out.mkdir(parents=True, exist_ok=True)
        # Where the checkout is, for the target/release fallback of an installed copy.
        (out / "_checkout.py").write_text(f"CHECKOUT = {str(HERE.parent)!r}\n")
        bundle = os.environ.get("RESID_BUNDLE_PLUGIN")
        if bundle:
            src = Path(bundle)
            if src.is_dir():
                src = src / "libh5resid.so"
            if not src.is_file():
                raise SystemExit(f"RESID_BUNDLE_PLUGIN={bundle}: no such file "
                                 "(build it with `cargo build --release -p h5resid`)")
            shutil.copy2(src, out / "libh5resid.so")


setup(cmdclass={"build_py": BuildPy})
