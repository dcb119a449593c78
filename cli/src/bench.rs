//! `resid bench`: runs scripts/bench (resid beside SZ3, ZFP and SPERR through h5py; Markdown
//! table on stdout, rate-distortion PNGs) with a progress line per field.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;

use crate::Failure;

#[derive(Args)]
pub struct BenchArgs {
    /// Path of scripts/bench (default: found from this executable or the source checkout)
    #[arg(long, value_name = "PATH")]
    pub script: Option<PathBuf>,
    /// Markdown results file (scripts/bench --out)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Directory for the RD plots, one PNG per field (scripts/bench --plots)
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Python interpreter
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Arguments passed to scripts/bench unchanged (after `--`)
    #[arg(last = true, value_name = "BENCH ARGS")]
    pub rest: Vec<String>,
}

fn find_script(a: &BenchArgs) -> Result<PathBuf, Failure> {
    if let Some(s) = &a.script {
        return if s.is_file() {
            Ok(s.clone())
        } else {
            Err(Failure::usage(format!(
                "--script {}: no such file",
                s.display()
            )))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // <repo>/target/release/resid (or target/release/deps/ in tests)
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("scripts/bench"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Failure::usage(format!(
                "scripts/bench not found (looked at {}); pass --script PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

pub fn run(a: &BenchArgs) -> Result<(), Failure> {
    let script = find_script(a)?;
    let mut cmd = Command::new(&a.python);
    cmd.arg(&script);
    if let Some(o) = &a.out {
        cmd.arg("--out").arg(o);
    }
    if let Some(p) = &a.plots {
        cmd.arg("--plots").arg(p);
    }
    cmd.args(&a.rest);
    let help = a.rest.iter().any(|r| r == "-h" || r == "--help");
    cmd.stdout(Stdio::inherit()).stderr(if help {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::run(format!("cannot run {} {}: {e}", a.python, script.display())))?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos} fields measured  {wide_msg}",
        )
        .unwrap(),
    );
    if !help {
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut fields = 0;
        for line in BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("bench: ") && line.ends_with(" ...") {
                if fields > 0 {
                    bar.inc(1);
                }
                fields += 1;
                bar.set_message(
                    line.trim_start_matches("bench: ")
                        .trim_end_matches(" ...")
                        .to_string(),
                );
            } else {
                bar.println(&line);
            }
        }
        if fields > 0 {
            bar.inc(1);
        }
    }
    let status = child
        .wait()
        .map_err(|e| Failure::run(format!("scripts/bench: {e}")))?;
    bar.finish_and_clear();
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => Err(Failure::usage(
            "scripts/bench refused its arguments (see above)",
        )),
        _ => Err(Failure::run(format!(
            "scripts/bench failed ({status}): resid failed or broke its bound, see above"
        ))),
    }
}
