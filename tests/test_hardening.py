"""Hostile chunks through HDF5 (issue #8, ARCHITECTURE.md invariant 3: bad input never crashes).

A corpus of damaged chunks (truncated, bit-flipped, wrong version / checksum / magic, huge
declared shape, wrong size, garbage) is generated here from a real chunk and written into an
HDF5 file with the direct chunk write API, one hostile chunk per chunk slot, bypassing the
filter. Reading each slot through h5py and through h5dump must fail with an error (h5dump
prints the plugin's "resid: ..." message; h5py under HDF5 2.0 only says the filter failed)
and the process must keep running: in the same process a good chunk and a good dataset still
read back. Each reader runs in a subprocess so a crash is a failed test, not a dead runner.

Also: concurrent reads from several Python threads (each opening the file) and several
processes give the same bytes as one reader.

Run after `cargo build --release -p h5resid`:  python3 -m pytest -q tests/test_hardening.py
"""

import inspect
import json
import struct
import subprocess
import sys
import zlib

import pytest

from test_hdf5_plugin import FILTER_ID, env, need, run, run_py, words

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

CHUNK = 64  # values per chunk of the test dataset (1-D float32)


# ---------------------------------------------------------------------------------------------
# The container layout (docs/FORMAT.md), just enough to damage chunks on purpose.


def header_len(b):
    return 8 + 8 * b[7] + 52


def fix_crcs(b):
    """Rewrites the header, section and block checksums so damage reaches the decoders."""
    b = bytearray(b)
    if len(b) < 8:
        return bytes(b)
    h = header_len(b)
    if h + 4 > len(b):
        return bytes(b)
    struct.pack_into("<I", b, h, zlib.crc32(bytes(b[:h])))
    (sections,) = struct.unpack_from("<I", b, h - 4)
    pos = h + 4
    for _ in range(min(sections, 16)):
        if pos + 16 > len(b):
            break
        (length,) = struct.unpack_from("<Q", b, pos + 4)
        start, end = pos + 16, pos + 16 + length
        if end > len(b):
            break
        if b[pos] == 1 and length >= 4:  # block directory: fix each block's CRC
            (count,) = struct.unpack_from("<I", b, start)
            at = start + 4 + 12 * count
            for e in range(count):
                entry = start + 4 + 12 * e
                if entry + 12 > end:
                    break
                (blen,) = struct.unpack_from("<I", b, entry + 4)
                if at + blen > end:
                    break
                struct.pack_into("<I", b, entry + 8, zlib.crc32(bytes(b[at:at + blen])))
                at += blen
        struct.pack_into("<I", b, pos + 12, zlib.crc32(bytes(b[start:end])))
        pos = end
    return bytes(b)


def hostile_corpus(good, small):
    """name -> (bytes, must_fail). `good` is a valid chunk of this dataset, `small` a valid
    chunk of fewer values. must_fail=False: damage the checksums cannot see once they are
    rewritten may decode to wrong values; it only must not crash."""
    g = bytes(good)
    h = header_len(g)

    def patch(at, new, crc=True):
        b = bytearray(g)
        b[at:at + len(new)] = new
        return fix_crcs(b) if crc else bytes(b)

    def flip(at, mask=0x5A, crc=False):
        b = bytearray(g)
        b[at] ^= mask
        return fix_crcs(b) if crc else bytes(b)

    c = {
        "truncated_3": (g[:3], True),
        "truncated_header": (g[:h - 1], True),
        "truncated_half": (g[:len(g) // 2], True),
        "truncated_last_byte": (g[:-1], True),
        "trailing_byte": (g + b"\0", True),
        "wrong_magic": (flip(0), True),
        "wrong_magic_crc_fixed": (patch(0, b"RSIX"), True),
        "wrong_version": (patch(4, bytes([2])), True),
        "version_zero": (patch(4, bytes([0])), True),
        "unknown_layout": (patch(5, bytes([7])), True),
        "unknown_dtype": (patch(6, bytes([9])), True),
        "rank_zero": (patch(7, bytes([0])), True),
        "wrong_header_checksum": (flip(h), True),
        "flipped_header_byte": (flip(20), True),
        "flipped_payload_byte": (flip(len(g) - 3), True),
        "section_reserved_bits": (patch(h + 4 + 1, bytes([1])), True),
        "feedback_even": (patch(h - 50, struct.pack("<H", 2)), True),
        "huge_shape": (patch(8, struct.pack("<Q", 1 << 40)), True),
        "overflowing_shape": (patch(8, struct.pack("<Q", (1 << 63) + 5)), True),
        "zero_dimension": (patch(8, struct.pack("<Q", 0)), True),
        "huge_section_length": (patch(h + 4 + 4, struct.pack("<Q", (1 << 64) - 1)), True),
        "wrong_size_chunk": (bytes(small), True),
        "all_ff": (b"\xff" * len(g), True),
        "all_zero": (b"\0" * len(g), True),
        "nan_grid_step": (patch(h - 24, struct.pack("<d", float("nan"))), True),
    }
    # Odd but absurd feedback step: the decoder must cope (error or values), not crash.
    c["feedback_huge"] = (patch(h - 50, struct.pack("<H", 0xFFFF)), False)
    # Bit flips everywhere with the checksums rewritten: the decoders see the damage.
    for at in range(8, len(g), max(1, len(g) // 24)):
        c[f"flip_{at}_crc_fixed"] = (flip(at, 0x10, crc=True), False)
    return c


def make_file(tmp_path, coder=0):
    """Writes hostile.h5: dataset x has one hostile chunk per slot, then one good chunk;
    dataset good is untouched. Returns (case names in slot order, must_fail flags)."""
    p = run_py(tmp_path, f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from corpus import hostile_corpus
        data = (np.sin(np.linspace(0, 40, {CHUNK} * 64)) * 10).astype("<f4")
        opts = {tuple(words("abs", 1e-3, 0))!r}[:4] + ({coder},)
        with h5py.File("small.h5", "w") as f:
            s = f.create_dataset("s", data=data[:16], chunks=(16,), compression={FILTER_ID},
                                 compression_opts=opts)
            small = s.id.read_direct_chunk((0,))[1]
        with h5py.File("hostile.h5", "w") as f:
            f.create_dataset("good", data=data, chunks=({CHUNK},), compression={FILTER_ID},
                             compression_opts=opts)
            x = f.create_dataset("x", data=data, chunks=({CHUNK},), compression={FILTER_ID},
                                 compression_opts=opts)
            mask, good = x.id.read_direct_chunk((0,))
            cases = hostile_corpus(good, small)
            names = sorted(cases)
            assert len(names) < 64
            for i, name in enumerate(names):
                x.id.write_direct_chunk((i * {CHUNK},), cases[name][0], mask)
        np.save("data.npy", data)
        print(json.dumps({{"names": names, "must_fail": [cases[n][1] for n in names]}}))
    """)
    return p.result["names"], p.result["must_fail"]


@pytest.fixture()
def corpus_module(tmp_path):
    """The corpus code, importable from the subprocess."""
    src = inspect.getsource
    (tmp_path / "corpus.py").write_text(
        "import struct, zlib\n\n" + src(header_len) + "\n" + src(fix_crcs) + "\n" + src(hostile_corpus)
    )
    return tmp_path


@pytest.mark.parametrize("coder", [0, 1, 3, 4], ids=["range", "lz4", "rans", "grouped"])
def test_h5py_hostile_chunks_fail_and_process_lives(corpus_module, coder):
    tmp_path = corpus_module
    names, must_fail = make_file(tmp_path, coder)
    p = run_py(tmp_path, f"""
        names = {names!r}
        out = {{}}
        data = np.load("data.npy")
        with h5py.File("hostile.h5", "r") as f:
            x = f["x"]
            for i, name in enumerate(names):
                try:
                    x[i * {CHUNK}:(i + 1) * {CHUNK}]
                    out[name] = "ok"
                except Exception as e:
                    out[name] = type(e).__name__ + ": " + str(e)
            # After all those failures the same process still reads good data.
            last = len(names)
            tail_ok = bool(np.array_equal(np.abs(x[last * {CHUNK}:] - data[last * {CHUNK}:]) <= 1e-3,
                                          np.ones(len(data) - last * {CHUNK}, bool)))
            good = f["good"][...]
            good_ok = bool(np.all(np.abs(good.astype("f8") - data) <= 1e-3))
        with h5py.File("hostile.h5", "r") as f:
            again = bool(np.all(np.abs(f["good"][...].astype("f8") - data) <= 1e-3))
        print(json.dumps({{"out": out, "tail_ok": tail_ok, "good_ok": good_ok, "again": again}}))
    """)
    r = p.result
    assert r["tail_ok"] and r["good_ok"] and r["again"], r
    for name, fail in zip(names, must_fail):
        res = r["out"][name]
        if fail:
            assert res.startswith("OSError"), (name, res)
            # HDF5 2.0 only says "filter returned failure during read"; older ones add ours.
            assert "filter" in res.lower() or "resid" in res.lower(), (name, res)
        else:
            assert res == "ok" or res.startswith("OSError"), (name, res)


def test_h5dump_hostile_chunks_report_resid(corpus_module):
    need("h5dump")
    tmp_path = corpus_module
    names, must_fail = make_file(tmp_path)
    failures = []
    for i, (name, fail) in enumerate(zip(names, must_fail)):
        p = run(["h5dump", "--enable-error-stack", "-d", "/x", "-s", str(i * CHUNK), "-c", str(CHUNK),
                 str(tmp_path / "hostile.h5")])
        # h5dump 1.10.8 exits 0 when a subset (-s/-c) read fails, so judge by the error stack.
        if p.returncode < 0:
            failures.append(f"{name}: h5dump killed by signal {-p.returncode}")
        elif fail and ("resid: " not in p.stderr or "H5Dread failed" not in p.stderr):
            failures.append(f"{name}: rc {p.returncode}, stderr: {p.stderr[-600:]}")
        elif not fail and "H5Dread failed" in p.stderr and "resid: " not in p.stderr:
            failures.append(f"{name}: failed without a resid message: {p.stderr[-600:]}")
    assert not failures, "\n".join(failures)
    # The good dataset in the same file still dumps; the whole hostile one fails with rc != 0.
    p = run(["h5dump", "-d", "/good", str(tmp_path / "hostile.h5")])
    assert p.returncode == 0, p.stderr[-2000:]
    p = run(["h5dump", "--enable-error-stack", "-d", "/x", str(tmp_path / "hostile.h5")])
    assert p.returncode > 0 and "resid: " in p.stderr, (p.returncode, p.stderr[-2000:])


def test_hostile_size_errors_name_the_sizes(corpus_module):
    """A chunk that decodes to another size than the dataset's chunk, and one that declares a
    huge shape, are refused with messages that say so (seen through h5dump's error stack)."""
    need("h5dump")
    tmp_path = corpus_module
    names, _ = make_file(tmp_path)
    msgs = {}
    for name in ("huge_shape", "wrong_size_chunk"):
        i = names.index(name)
        p = run(["h5dump", "--enable-error-stack", "-d", "/x", "-s", str(i * CHUNK), "-c", str(CHUNK),
                 str(tmp_path / "hostile.h5")])
        msgs[name] = p.stderr
    assert "more than the limit" in msgs["huge_shape"], msgs["huge_shape"][-1500:]
    assert "resid: " in msgs["wrong_size_chunk"], msgs["wrong_size_chunk"][-1500:]


# ---------------------------------------------------------------------------------------------
# Concurrency


def test_concurrent_reads_threads_and_processes(tmp_path):
    opts = [words("abs", 1e-2, 0), words("rel", 1e-4, 1), words("nrmse", 1e-4, 0), words("psnr", 70.0, 1)]
    p = run_py(tmp_path, f"""
        from concurrent.futures import ThreadPoolExecutor
        rng = np.random.default_rng(1)
        base = np.cumsum(rng.normal(size=(8, 64, 64, 64)), axis=3).astype("<f4")
        with h5py.File("c.h5", "w") as f:
            for k, o in enumerate({opts!r}):
                f.create_dataset(f"d{{k}}", data=base * (k + 1), chunks=(1, 32, 64, 64),
                                 compression={FILTER_ID}, compression_opts=tuple(o))
        def read_all():
            with h5py.File("c.h5", "r") as f:
                return [f[f"d{{k}}"][...].tobytes() for k in range(4)]
        ref = read_all()
        def worker(i):
            return [read_all() == ref for _ in range(3)]
        with ThreadPoolExecutor(max_workers=6) as ex:
            results = list(ex.map(worker, range(6)))
        print(json.dumps({{"threads_ok": all(all(r) for r in results), "n": len(results)}}))
    """)
    assert p.result["threads_ok"], p.result
    # Several processes read the same file at once and get the same bytes.
    (tmp_path / "reader.py").write_text(
        "import hashlib, h5py\n"
        "with h5py.File('c.h5', 'r') as f:\n"
        "    print(hashlib.sha256(b''.join(f[f'd{k}'][...].tobytes() for k in range(4))).hexdigest())\n"
    )
    procs = [subprocess.Popen([sys.executable, "reader.py"], cwd=tmp_path, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [pr.communicate(timeout=300) for pr in procs]
    assert all(pr.returncode == 0 for pr in procs), [o[1][-500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1, outs


def test_forked_workers_read_and_write(tmp_path):
    """multiprocessing's fork start method (Linux's default before Python 3.14, and PyTorch's
    DataLoader): workers forked after the parent used the filter read and write through it.
    rayon's pool comes across fork without its threads; before resid::pool the workers hung."""
    p = run_py(tmp_path, f"""
        import multiprocessing as mp
        x = np.cumsum(np.random.default_rng(2).normal(size=(32, 96, 128)), axis=2).astype("<f4")
        with h5py.File("p.h5", "w") as f:
            f.create_dataset("a", data=x, chunks=(32, 96, 128),
                             compression={FILTER_ID}, compression_opts={tuple(words("rel", 1e-4, 0))!r})
        def read(i):
            with h5py.File("p.h5", "r") as f:
                return f["a"][...].tobytes()
        def write(i):
            with h5py.File(f"w{{i}}.h5", "w") as f:
                f.create_dataset("a", data=x * (i + 1), chunks=(32, 96, 128),
                                 compression={FILTER_ID}, compression_opts={tuple(words("rel", 1e-4, 0))!r})
            with h5py.File(f"w{{i}}.h5", "r") as f:
                return float(np.abs(f["a"][...] - x * (i + 1)).max())
        ref = read(0)  # the parent's worker threads start here
        with mp.get_context("fork").Pool(2) as pool:
            reads = pool.map_async(read, range(4)).get(timeout=120)
            errs = pool.map_async(write, range(2)).get(timeout=120)
        bound = 1e-4 * float(x.max() - x.min())
        print(json.dumps({{"same": all(r == ref for r in reads), "errs": errs, "bound": bound}}))
    """)
    r = p.result
    assert r["same"], r
    assert all(e <= r["bound"] * (i + 1) for i, e in enumerate(r["errs"])), r
