"""Test-wide settings.

The installed resid_h5 wheel registers the filter in every Python that imports h5py (its
resid_h5.pth). The tests choose which plugin a process uses (HDF5_PLUGIN_PATH, PYTHONPATH,
RESID_PLUGIN) and check that a process without it cannot read, so that is off here, for this
process and the subprocesses it starts; tests/test_packaging.py turns it on where it is the
thing tested.
"""

import os

os.environ["RESID_H5_AUTOREGISTER"] = "0"
