//! Worker threads that survive `fork`. resid's parallel loops run on rayon's global pool. A
//! process forked after that pool started (Python's `multiprocessing` and PyTorch's
//! `DataLoader` fork on Linux) inherits the pool without its threads, so work sent there
//! would wait forever. [`run`] sends such a child's work to a pool of its own, built once per
//! process; c-blosc and OpenBLAS reset their threads after `fork` for the same reason.
//!
//! In the process that first used resid nothing changes: the work runs on the calling thread
//! with the global pool (or with the pool the caller installed, such as a test's one-thread
//! pool), or, for work with many parallel loops ([`run_on_worker`]), on one of the global
//! pool's workers while the caller waits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use crate::error::{Error, Result};

/// The process that first ran resid's work (0: none yet), whose global pool is usable.
static FIRST: AtomicU32 = AtomicU32::new(0);

/// A forked child's own pool, with the child's process id.
static CHILD: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Runs `f`, whose parallel loops use rayon, where they can run in this process (see the
/// module's docs). An error only in a forked child that cannot start a thread, where the
/// inherited pool would hang.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    run_where(f, false)
}

/// [`run`], with `f` moved onto a worker of the global pool in the process that first used
/// resid (the caller waits). Each parallel loop called from outside the pool hands its work to
/// the pool and waits for it, two thread switches per loop: for an encoder, whose trials run
/// dozens of loops per chunk, those switches took a quarter of the write time of 16x64x64
/// chunks (BENCHMARKS.md). One hand-off per call costs more than it saves where a call runs
/// few loops (a small chunk's decoder, plain Lorenzo's encoder), which therefore uses [`run`],
/// and so does work that may use the GPU of the caller's CUDA context.
pub fn run_on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    run_where(f, true)
}

fn run_where<R: Send>(f: impl FnOnce() -> R + Send, on_worker: bool) -> Result<R> {
    let pid = std::process::id();
    let first = match FIRST.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => pid,
        Err(first) => first,
    };
    if rayon::current_thread_index().is_some() {
        return Ok(f());
    }
    if first == pid {
        return Ok(match on_worker {
            true => rayon::join(f, || ()).0,
            false => f(),
        });
    }
    match child_pool(pid) {
        Some(pool) => Ok(pool.install(f)),
        None => Err(Error::Unsupported(format!(
            "no worker thread can be started in process {pid}, forked from {first}"
        ))),
    }
}

/// Whether this process is a child forked after another process ran resid's work: its CUDA
/// state, like its global thread pool, belongs to the parent and must not be used.
pub fn forked() -> bool {
    let first = FIRST.load(Ordering::Acquire);
    first != 0 && first != std::process::id()
}

/// This process's own pool, built on first use; `None` when no thread can be started.
fn child_pool(pid: u32) -> Option<Arc<rayon::ThreadPool>> {
    // A lock held by another thread of the parent at the fork is never released here: after a
    // bounded wait, this call builds a pool of its own.
    let mut slot = None;
    for _ in 0..1000 {
        match CHILD.try_lock() {
            Ok(g) => {
                slot = Some(g);
                break;
            }
            Err(TryLockError::Poisoned(p)) => {
                slot = Some(p.into_inner());
                break;
            }
            Err(TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    if let Some((owner, pool)) = slot.as_deref().and_then(Option::as_ref) {
        if *owner == pid {
            return Some(pool.clone());
        }
    }
    let pool = match rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("resid-{i}"))
        .build()
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            log::warn!("resid: no worker threads in process {pid}: {e}");
            return None;
        }
    };
    if let Some(mut g) = slot {
        // The parent's pool, if any, has no threads here: forget it rather than drop it.
        if let Some(old) = g.replace((pid, pool.clone())) {
            std::mem::forget(old);
        }
    }
    Some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_process_runs_work_in_place() {
        let here = std::thread::current().id();
        assert_eq!(run(|| std::thread::current().id()).unwrap(), here);
        assert!(!forked());
        assert_eq!(FIRST.load(Ordering::Acquire), std::process::id());
    }
}
