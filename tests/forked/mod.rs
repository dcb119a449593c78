//! Runs a check in a process forked from the test's (`tests/fork.rs`, `tests/gpu.rs`): what a
//! Python `multiprocessing` worker or a PyTorch `DataLoader` worker meets.

use std::time::{Duration, Instant};

/// Forks, runs `check` in the child and waits for it: `Err` says why it did not return
/// `true` there (it returned `false` or panicked, or it was still running after two minutes
/// and was killed: a hang).
pub fn in_forked_child(check: impl FnOnce() -> bool) -> Result<(), String> {
    // SAFETY: the child runs only `check` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        // SAFETY: ends the child without the parent's exit handlers (or CUDA's).
        unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
    }
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: waits for our own child.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
        if start.elapsed() > Duration::from_secs(120) {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("the forked child hung".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("the forked child's check failed (status {status})"))
    }
}
