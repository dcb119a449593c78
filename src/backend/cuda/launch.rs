//! Kernel launches over raw device addresses, each checked against the kernel's parameters
//! as its source declares them.

use std::collections::HashMap;
use std::sync::OnceLock;

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::kernels::{self, Param};
use super::Cuda;
use crate::backend::device_error;
use crate::error::{ensure, Error, Result};

/// A raw kernel argument for [`Cuda::launch`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A device address (0 = null).
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

/// Checks `args` against kernel `name`'s parameters as its source declares them
/// ([`kernels::kernels_in`]). A launch whose arguments disagree (count or kind) is refused
/// with the reason, where the device would otherwise read garbage.
pub(crate) fn check_args(name: &str, args: &[Arg]) -> Result<()> {
    type Signatures = HashMap<&'static str, Vec<Option<Param>>>;
    static SIGNATURES: OnceLock<Signatures> = OnceLock::new();
    let sigs = SIGNATURES.get_or_init(|| {
        kernels::MODULES
            .iter()
            .flat_map(|m| kernels::kernels_in(m.source))
            .collect()
    });
    let Some(params) = sigs.get(name) else {
        return Err(Error::Unsupported(format!("cuda: no kernel {name}")));
    };
    ensure!(
        params.len() == args.len(),
        Error::Unsupported(format!(
            "cuda: {name} takes {} arguments, given {}",
            params.len(),
            args.len()
        ))
    );
    for (k, (p, a)) in params.iter().zip(args).enumerate() {
        let given = match a {
            Arg::Ptr(_) => Param::Ptr,
            Arg::I32(_) => Param::I32,
            Arg::I64(_) => Param::I64,
            Arg::F32(_) => Param::F32,
            Arg::F64(_) => Param::F64,
        };
        ensure!(
            *p == Some(given),
            Error::Unsupported(format!(
                "cuda: {name}: argument {k} is {given:?}, the kernel takes {}",
                p.map_or("a type resid does not pass".into(), |p| format!("{p:?}"))
            ))
        );
    }
    Ok(())
}

/// Threads per block of [`Cuda::launch`] (the learned stages' kernels assume it).
pub(crate) const THREADS: u32 = 256;

/// Blocks of [`THREADS`] covering `n` items.
pub(crate) fn blocks_for(n: usize) -> usize {
    n.div_ceil(THREADS as usize)
}

/// A kernel launch: its name, grid and arguments.
pub(crate) type Launch = (&'static str, (usize, usize, usize), Vec<Arg>);

impl Cuda {
    /// Launches kernel `name` on a grid of [`THREADS`]-thread blocks with raw arguments.
    ///
    /// # Safety
    /// Every [`Arg::Ptr`] is null (where the kernel allows it) or the address of a live device
    /// buffer holding everything the kernel reads or writes through it, until the stream has
    /// run the kernel (a download or [`Cuda::sync`] after the last launch).
    pub(crate) unsafe fn launch(
        &self,
        name: &str,
        grid: (usize, usize, usize),
        args: &[Arg],
    ) -> Result<()> {
        ensure!(
            grid.0 <= u32::MAX as usize && grid.1 <= 65535 && grid.2 <= 65535,
            Error::Unsupported(format!("cuda: {name}: grid {grid:?} too large"))
        );
        check_args(name, args)?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut b = self.stream.launch_builder(self.f(name));
        for a in args {
            match a {
                Arg::Ptr(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
            };
        }
        let dims = (grid.0 as u32, grid.1 as u32, grid.2 as u32);
        unsafe { b.launch(cfg(dims, (THREADS, 1, 1))) }.map_err(|e| device_error(name, e))?;
        Ok(())
    }
}

pub(super) fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: 0,
    }
}
