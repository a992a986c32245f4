//! CPU profiles of a run (feature `profile`): pprof's sampling profiler (SIGPROF, every
//! thread of the process) while the run goes on, written as a pprof protobuf file
//! (`go tool pprof`, speedscope, Grafana Pyroscope read it) and an SVG flamegraph, with
//! the functions that held the most samples. This answers what the code was doing when
//! it was slow; the hook timings say which hook.
//!
//! Only one profile can run in a process at a time.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod samples;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dump::{DumpError, write_atomic_bytes};

/// Whether a function belongs to the profiler (the unwinder, the signal handlers), not to
/// the code that was running.
///
/// A name alone is not always enough: in line tables without full debug info, an inlined
/// function has its short name only (`trace`), so the source file decides where it has one.
pub(crate) fn is_profiler_frame(name: &str, file: Option<&std::path::Path>) -> bool {
    file.is_some_and(|file| {
        let file = file.to_string_lossy();
        ["/backtrace-0.", "/pprof-0."]
            .iter()
            .any(|krate| file.contains(krate))
    }) || name.starts_with("backtrace::")
        || name.starts_with("pprof::")
        || name.starts_with("<pprof::")
        || name.contains("perf_signal_handler")
        || name.contains("profile::samples::on_sigprof")
        || name.contains("profile::samples::record")
        // Inlined into its caller (a release build), a frame is named without its path.
        || (matches!(name, "record" | "on_sigprof")
            && file.is_some_and(|file| file.ends_with("profile/samples.rs")))
        || name.starts_with("__restore_rt")
        || name == "Unknown"
}

/// A running CPU profile.
pub struct CpuProfile {
    guard: pprof::ProfilerGuard<'static>,
    frequency: i32,
    /// Whether slow hooks can name their samples, or why not.
    linked: Result<(), String>,
}

impl std::fmt::Debug for CpuProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProfile")
            .field("frequency", &self.frequency)
            .field("linked", &self.linked)
            .finish_non_exhaustive()
    }
}

/// What a finished profile holds and where it was written.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    /// The pprof protobuf file.
    pub pprof: PathBuf,
    /// The SVG flamegraph.
    pub svg: PathBuf,
    /// Samples taken.
    pub samples: u64,
    /// The functions most often on top of a stack (where the CPU was), with their
    /// samples, most first (at most 10).
    pub top: Vec<(String, u64)>,
    /// Every function seen in a sample (anywhere in the stack), with its samples.
    pub functions: HashMap<String, u64>,
}

impl CpuProfile {
    /// Starts sampling every thread `frequency` times per CPU second.
    pub fn start(frequency: i32) -> Result<Self, String> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency.max(1))
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| format!("cannot start the CPU profiler: {e}"))?;
        // Each sample's time and stack on the engine's threads, for the slow hooks. The
        // profile stands without it.
        #[cfg(target_os = "linux")]
        let linked = samples::install();
        #[cfg(not(target_os = "linux"))]
        let linked: Result<(), String> = Err("samples keep their time only on Linux".into());
        Ok(CpuProfile {
            guard,
            frequency,
            linked,
        })
    }

    /// Whether slow hooks name the samples taken while they ran (`Err` says why not).
    pub fn links_slow_hooks(&self) -> Result<(), &str> {
        self.linked.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Stops, writes `dir/<name>.pb` and `dir/<name>.svg`, and says what the profile
    /// holds.
    pub fn finish(self, dir: &Path, name: &str) -> Result<ProfileReport, DumpError> {
        #[cfg(target_os = "linux")]
        samples::uninstall();
        let fail = |path: PathBuf, e: &dyn std::fmt::Display| DumpError::Write {
            path,
            source: std::io::Error::other(e.to_string()),
        };
        let stem = crate::dump::safe_file_stem(name);
        let pb_name = format!("{stem}.pb");
        let svg_name = format!("{stem}.svg");
        let report = self
            .guard
            .report()
            .build()
            .map_err(|e| fail(dir.join(&pb_name), &e))?;
        let mut samples = 0u64;
        let mut top: HashMap<String, u64> = HashMap::new();
        let mut functions: HashMap<String, u64> = HashMap::new();
        for (frames, count) in &report.data {
            let count = u64::try_from(*count).unwrap_or(0);
            samples += count;
            // The profiler's own frames (the unwinder, the signal handler) come first:
            // the code that was running starts after them.
            let names: Vec<String> = frames
                .frames
                .iter()
                .flat_map(|frame| frame.iter())
                .skip_while(|symbol| is_profiler_frame(&symbol.name(), symbol.filename.as_deref()))
                .map(|symbol| symbol.name())
                .collect();
            if let Some(first) = names.first() {
                *top.entry(first.clone()).or_default() += count;
            }
            let mut seen: Vec<&String> = Vec::new();
            for name in &names {
                if !seen.contains(&name) {
                    seen.push(name);
                    *functions.entry(name.clone()).or_default() += count;
                }
            }
        }
        let mut top: Vec<(String, u64)> = top.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(10);
        use pprof::protos::Message;
        let profile = report.pprof().map_err(|e| fail(dir.join(&pb_name), &e))?;
        let pb = write_atomic_bytes(dir, &pb_name, &profile.encode_to_vec())?;
        let mut svg = Vec::new();
        report
            .flamegraph(&mut svg)
            .map_err(|e| fail(dir.join(&svg_name), &e))?;
        let svg = write_atomic_bytes(dir, &svg_name, &svg)?;
        Ok(ProfileReport {
            pprof: pb,
            svg,
            samples,
            top,
            functions,
        })
    }
}
