//! The CPU profile's samples on one thread, each with the moment it was taken, so that a
//! slow operation can name the samples that fell inside it. pprof's own report merges
//! identical stacks and keeps no time per sample, so it cannot say that.
//!
//! While a [`CpuProfile`](super::CpuProfile) runs, SIGPROF goes to a handler of ours that
//! first calls pprof's handler (so pprof's profile is unchanged) and then, on a thread
//! that [attached](ThreadSamples::attach) a ring, records the process clock
//! ([`crate::span::now_ns`], the clock the hooks are timed with) and the stack of return
//! addresses. These are the very signals pprof samples with: a slow operation's samples
//! are samples of the profile file.
//!
//! Only the attached thread reads its ring, and the handler runs on that thread; so the
//! ring needs no lock. A sequence number per slot tells the reader a slot the handler
//! was writing when it interrupted the reader. The ring holds the newest [`SLOTS`]
//! samples (4 s at 1,000 Hz; 1.6 MB per thread that runs a backtest while a profile
//! runs, freed when its run ends); an operation longer than that keeps its newest
//! samples and says so.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, compiler_fence};

use super::is_profiler_frame;
use crate::span;
use crate::tracker::{SampledFunction, SlowProfile};

/// Samples a thread's ring keeps (the newest).
pub const SLOTS: usize = 4096;

/// Return addresses kept per sample (the innermost).
pub const DEPTH: usize = 48;

/// Set in a slot's length when its stack starts at the interrupted program counter.
const EXACT: usize = 1 << (usize::BITS - 1);

struct Slot {
    /// `2n + 1` while sample `n` is written into it, `2n + 2` once it holds it.
    seq: AtomicU64,
    ts: AtomicU64,
    len: AtomicUsize,
    ips: [AtomicUsize; DEPTH],
}

struct Ring {
    /// Samples written so far.
    next: AtomicU64,
    slots: Box<[Slot]>,
}

thread_local! {
    /// The handles' shared ring, while one is attached (not read by the handler).
    static SHARED: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
    /// The ring of this thread, when attached. Constant-initialized without a destructor,
    /// so reading it is a plain thread-local access, safe in a signal handler.
    static RING: Cell<*const Ring> = const { Cell::new(std::ptr::null()) };
}

/// pprof's SIGPROF handler, called first by ours; 0 when ours is not installed.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
/// Whether our handler is installed (a profile runs).
static ACTIVE: AtomicBool = AtomicBool::new(false);

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

extern "C" fn on_sigprof(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let previous = PREVIOUS.load(Ordering::Acquire);
    if previous != 0 {
        // SAFETY: `previous` is the `sa_sigaction` of pprof's SA_SIGINFO handler, read
        // by `install` from the kernel's record of it.
        let previous: Handler = unsafe { std::mem::transmute::<usize, Handler>(previous) };
        previous(signal, info, context);
    }
    let ring = RING.try_with(Cell::get).unwrap_or(std::ptr::null());
    if ring.is_null() {
        return;
    }
    // SAFETY: errno is thread-local; it is put back as the interrupted code left it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: a non-null RING points to the ring of a live `ThreadSamples` of this
    // thread; it is set to null before that ring is freed, on this same thread.
    record(unsafe { &*ring }, interrupted_at(context));
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Where the signal interrupted the thread: the program counter saved in the signal's
/// context (0 when not known here).
fn interrupted_at(context: *mut libc::c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes an SA_SIGINFO handler a valid `ucontext_t`.
    #[cfg(target_arch = "x86_64")]
    let pc = unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    let pc = unsafe { (*context).uc_mcontext.pc as usize };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let pc = {
        let _ = context;
        0
    };
    pc
}

/// Writes one sample: the clock and the stack from `pc` outwards (the frames of the
/// handler and the unwinder before it are left out; with `pc` 0 or not found on the
/// stack, every frame is kept and the names are filtered later). Runs in the signal
/// handler: no lock, no allocation.
fn record(ring: &Ring, pc: usize) {
    let n = ring.next.load(Ordering::Relaxed);
    let slot = &ring.slots[(n % SLOTS as u64) as usize];
    slot.seq.store(2 * n + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    slot.ts.store(span::now_ns(), Ordering::Relaxed);
    let (mut len, mut frames, mut from) = (0, 0, None);
    // SAFETY: the unsynchronized trace is what pprof itself runs in its handler; it
    // takes no lock of backtrace's and allocates nothing.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if from.is_none() && pc != 0 && ip == pc {
                // The interrupted frame: the stack starts here.
                from = Some(frames);
                len = 0;
            }
            frames += 1;
            if len < DEPTH {
                slot.ips[len].store(ip, Ordering::Relaxed);
                len += 1;
            }
            // Until the interrupted frame is found, the handler's frames are overwritten.
            len < DEPTH || from.is_none() && frames < 4 * DEPTH
        });
    }
    // Marks whether the first address is the interrupted program counter (not a return
    // address), in the top bit of the length.
    let len = if from.is_some() { len | EXACT } else { len };
    slot.len.store(len, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    slot.seq.store(2 * n + 2, Ordering::Relaxed);
    ring.next.store(n + 1, Ordering::Relaxed);
}

/// Puts our handler in front of pprof's (called once pprof's profiler runs).
pub(super) fn install() -> Result<(), String> {
    // SAFETY: reading and setting a signal's action with valid pointers.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current) != 0 {
            return Err(format!(
                "cannot read the SIGPROF handler: {}",
                std::io::Error::last_os_error()
            ));
        }
        if current.sa_flags & libc::SA_SIGINFO == 0
            || current.sa_sigaction == libc::SIG_DFL
            || current.sa_sigaction == libc::SIG_IGN
        {
            return Err("the CPU profiler's SIGPROF handler is not installed".into());
        }
        if current.sa_sigaction == on_sigprof as *const () as usize {
            return Ok(());
        }
        PREVIOUS.store(current.sa_sigaction, Ordering::Release);
        let mut ours = current;
        ours.sa_sigaction = on_sigprof as *const () as usize;
        if libc::sigaction(libc::SIGPROF, &ours, std::ptr::null_mut()) != 0 {
            PREVIOUS.store(0, Ordering::Release);
            return Err(format!(
                "cannot install the SIGPROF handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Gives SIGPROF back to pprof's handler (before pprof stops).
pub(super) fn uninstall() {
    if !ACTIVE.swap(false, Ordering::AcqRel) {
        return;
    }
    let previous = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: as in `install`; `previous` is pprof's handler, still valid.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == on_sigprof as *const () as usize
        {
            current.sa_sigaction = previous;
            libc::sigaction(libc::SIGPROF, &current, std::ptr::null_mut());
        }
    }
    // Our handler may still be running on another thread: it reads PREVIOUS, so that
    // stays (pprof's handler lives as long as the process).
}

/// This thread's samples while a CPU profile runs. Not `Send`: the ring belongs to the
/// thread that attached it. A run nested in another on the same thread shares its ring;
/// the ring goes with the last handle.
pub struct ThreadSamples {
    ring: Rc<Ring>,
}

impl std::fmt::Debug for ThreadSamples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSamples")
            .field("taken", &self.ring.next.load(Ordering::Relaxed))
            .finish()
    }
}

/// One sample's stack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stack {
    /// Code addresses, innermost first.
    pub ips: Vec<usize>,
    /// Whether they start at the interrupted program counter; if not, they start in the
    /// profiler's own frames, which [`Symbols::stack`] leaves out by name.
    pub exact: bool,
}

/// The samples taken during an operation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// How many were taken.
    pub count: u32,
    /// Their stacks, at most the number asked for, the newest.
    pub stacks: Vec<Stack>,
    /// Whether the ring no longer held the operation's oldest samples.
    pub truncated: bool,
}

impl ThreadSamples {
    /// Starts keeping this thread's samples, if a CPU profile runs (sharing the ring of
    /// a run this one is nested in).
    pub fn attach() -> Option<Self> {
        ACTIVE.load(Ordering::Acquire).then(Self::attach_here)
    }

    /// [`attach`](Self::attach), whether a profile runs or not.
    fn attach_here() -> Self {
        if let Some(ring) = SHARED.with(|shared| shared.borrow().clone()) {
            return ThreadSamples { ring };
        }
        let samples = Self::detached();
        SHARED.with(|shared| *shared.borrow_mut() = Some(samples.ring.clone()));
        RING.with(|r| r.set(Rc::as_ptr(&samples.ring)));
        samples
    }

    /// A ring no handler writes into yet.
    fn detached() -> Self {
        // The handler reads the clock: it must be started before, not in the handler.
        span::now_ns();
        let slots = (0..SLOTS)
            .map(|_| Slot {
                seq: AtomicU64::new(0),
                ts: AtomicU64::new(0),
                len: AtomicUsize::new(0),
                ips: std::array::from_fn(|_| AtomicUsize::new(0)),
            })
            .collect();
        let ring = Rc::new(Ring {
            next: AtomicU64::new(0),
            slots,
        });
        ThreadSamples { ring }
    }

    /// The samples taken between `start_ns` and `end_ns` of the process clock, with at
    /// most `keep` stacks.
    pub fn between(&self, start_ns: u64, end_ns: u64, keep: usize) -> Taken {
        between(&self.ring, start_ns, end_ns, keep)
    }
}

/// The samples this thread's ring holds between `start_ns` and `end_ns` of the process
/// clock, with at most `keep` stacks; `None` when no run on this thread keeps samples.
pub(crate) fn here(start_ns: u64, end_ns: u64, keep: usize) -> Option<Taken> {
    SHARED
        .try_with(|shared| {
            let shared = shared.borrow();
            shared
                .as_ref()
                .map(|ring| between(ring, start_ns, end_ns, keep))
        })
        .ok()
        .flatten()
}

fn between(ring: &Ring, start_ns: u64, end_ns: u64, keep: usize) -> Taken {
    let next = ring.next.load(Ordering::Relaxed);
    let oldest = next.saturating_sub(SLOTS as u64);
    let mut taken = Taken::default();
    let mut reached_start = false;
    for n in (oldest..next).rev() {
        let slot = &ring.slots[(n % SLOTS as u64) as usize];
        let seq = slot.seq.load(Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        let ts = slot.ts.load(Ordering::Relaxed);
        let len = slot.len.load(Ordering::Relaxed);
        let exact = len & EXACT != 0;
        let len = (len & !EXACT).min(DEPTH);
        let stack = (taken.stacks.len() < keep).then(|| Stack {
            ips: slot.ips[..len]
                .iter()
                .map(|ip| ip.load(Ordering::Relaxed))
                .collect(),
            exact,
        });
        compiler_fence(Ordering::SeqCst);
        if seq != 2 * n + 2 || slot.seq.load(Ordering::Relaxed) != seq {
            continue; // overwritten, or being written when the handler came in
        }
        if ts > end_ns {
            continue;
        }
        if ts < start_ns {
            reached_start = true;
            break;
        }
        taken.count = taken.count.saturating_add(1);
        taken.stacks.extend(stack);
    }
    taken.truncated = !reached_start && oldest > 0;
    taken
}

impl Drop for ThreadSamples {
    fn drop(&mut self) {
        // The last handle besides the shared one: the ring goes.
        let last = Rc::strong_count(&self.ring) <= 2;
        let ours = Rc::as_ptr(&self.ring);
        if last {
            RING.with(|r| {
                if r.get() == ours {
                    r.set(std::ptr::null());
                }
            });
            let _ = SHARED.try_with(|shared| {
                let mut shared = shared.borrow_mut();
                if shared.as_ref().is_some_and(|s| Rc::ptr_eq(s, &self.ring)) {
                    *shared = None;
                }
            });
        }
        // The handler runs on this thread only: once RING is null here, no handler can
        // be inside the ring when it is freed.
        compiler_fence(Ordering::SeqCst);
    }
}

/// A function in a sampled stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its name, demangled (inlined functions have their short name only, without their
    /// module, in a release build's line tables).
    pub name: String,
    /// Whether it is the program's own code: its source file is known, is Rust, and is
    /// neither the standard library's (`/rustc/`) nor a dependency's (Cargo's registry
    /// or git checkouts); not the C library's or the kernel's vDSO.
    pub own: bool,
    /// Whether it is the profiler's (the unwinder, the signal handlers), not the code that
    /// was running.
    pub profiler: bool,
}

/// Function names of code addresses, each resolved once.
#[derive(Default)]
pub struct Symbols {
    frames: HashMap<usize, Vec<Frame>>,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols")
            .field("resolved", &self.frames.len())
            .finish()
    }
}

impl Symbols {
    /// The functions of a stack (innermost first, inlined functions included), from the
    /// code that was interrupted: the profiler's own frames are left out.
    pub fn stack(&mut self, stack: &Stack) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (i, &ip) in stack.ips.iter().enumerate() {
            // A return address points after its call: look up the call itself.
            let ip = if i == 0 && stack.exact {
                ip
            } else {
                ip.saturating_sub(1)
            };
            let resolved = self.frames.entry(ip).or_insert_with(|| {
                let mut found = Vec::new();
                backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
                    if let Some(name) = symbol.name() {
                        let name = format!("{name:#}");
                        let profiler = is_profiler_frame(&name, symbol.filename());
                        let own = symbol.filename().is_some_and(|file| {
                            let file = file.to_string_lossy();
                            file.ends_with(".rs")
                                && !(file.starts_with("/rustc/")
                                    || file.contains("/.cargo/registry/")
                                    || file.contains("/.cargo/git/"))
                        });
                        found.push(Frame {
                            name,
                            own,
                            profiler,
                        });
                    }
                });
                found
            });
            frames.extend(resolved.iter().cloned());
        }
        if !stack.exact {
            let skip = frames.iter().take_while(|f| f.profiler).count();
            frames.drain(..skip);
        }
        frames
    }
}

/// Names a slow operation's samples: the functions on top of their stacks and the most
/// frequent stack.
pub(crate) fn describe(symbols: &mut Symbols, taken: &Taken) -> SlowProfile {
    use std::collections::HashMap;
    let mut on_cpu: HashMap<String, u32> = HashMap::new();
    let mut stacks: HashMap<String, u32> = HashMap::new();
    for stack in &taken.stacks {
        let frames = symbols.stack(stack);
        // The innermost function of the program's own code: the standard library's
        // iterators and arithmetic, or the C library, say less than the function that
        // called them.
        let own = frames.iter().find(|f| f.own).or(frames.first());
        if let Some(top) = own {
            *on_cpu.entry(top.name.clone()).or_default() += 1;
        }
        let folded: Vec<&str> = frames.iter().rev().map(|f| f.name.as_str()).collect();
        *stacks.entry(folded.join(";")).or_default() += 1;
    }
    // The kept stacks stand for all the samples counted.
    let scale = |n: u32| {
        let kept = taken.stacks.len().max(1) as f64;
        (f64::from(n) / kept * f64::from(taken.count)).round() as u32
    };
    let mut on_cpu: Vec<SampledFunction> = on_cpu
        .into_iter()
        .map(|(function, samples)| SampledFunction {
            function,
            samples: scale(samples),
        })
        .collect();
    on_cpu.sort_by(|a, b| {
        b.samples
            .cmp(&a.samples)
            .then_with(|| a.function.cmp(&b.function))
    });
    on_cpu.truncate(5);
    let (stack, stack_samples) = stacks
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(stack, n)| (stack, scale(n)))
        .unwrap_or_default();
    SlowProfile {
        samples: taken.count,
        truncated: taken.truncated,
        on_cpu,
        stack,
        stack_samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_gets_the_samples_between_its_start_and_end() {
        let samples = ThreadSamples::detached();
        record(&samples.ring, 0);
        let start = span::now_ns();
        while span::now_ns() == start {}
        record(&samples.ring, 0);
        record(&samples.ring, 0);
        let end = span::now_ns();
        while span::now_ns() == end {}
        record(&samples.ring, 0);
        let taken = samples.between(start, end, 1);
        assert_eq!(
            (taken.count, taken.stacks.len(), taken.truncated),
            (2, 1, false)
        );
        assert!(!taken.stacks[0].ips.is_empty(), "a stack was recorded");
        assert!(!taken.stacks[0].exact, "no program counter given");
        assert_eq!(samples.between(end + 1, end + 1, 10).count, 0);
    }

    #[test]
    fn a_long_operation_says_its_oldest_samples_are_gone() {
        let samples = ThreadSamples::detached();
        let start = span::now_ns();
        for _ in 0..SLOTS + 10 {
            record(&samples.ring, 0);
        }
        let taken = samples.between(start, u64::MAX, 0);
        assert_eq!((taken.count, taken.truncated), (SLOTS as u32, true));
        assert!(taken.stacks.is_empty());
    }

    #[test]
    fn a_nested_run_shares_the_ring_and_the_last_handle_takes_it_away() {
        let outer = ThreadSamples::attach_here();
        let inner = ThreadSamples::attach_here();
        assert!(Rc::ptr_eq(&outer.ring, &inner.ring));
        assert_eq!(RING.with(Cell::get), Rc::as_ptr(&outer.ring));
        drop(inner);
        assert_eq!(
            RING.with(Cell::get),
            Rc::as_ptr(&outer.ring),
            "the outer run goes on"
        );
        drop(outer);
        assert!(RING.with(Cell::get).is_null());
        assert!(SHARED.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn the_stack_names_the_functions_that_ran() {
        #[inline(never)]
        fn sampled_here(ring: &Ring) {
            record(ring, 0);
            std::hint::black_box(());
        }
        let samples = ThreadSamples::detached();
        sampled_here(&samples.ring);
        let taken = samples.between(0, u64::MAX, 1);
        let frames = Symbols::default().stack(&taken.stacks[0]);
        let names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
        let own = frames.iter().find(|f| f.own).map(|f| f.name.as_str());
        assert!(
            own.is_some_and(|name| name.contains("sampled_here")),
            "{frames:?}"
        );
        assert!(
            names.iter().any(|n| n.contains("sampled_here")),
            "{names:?}"
        );
        assert!(!frames.iter().any(|f| f.profiler), "{names:?}");
        // The unwinder's frames and ours that took the sample are gone: the stack starts
        // in the function that was running.
        assert!(names[0].contains("sampled_here"), "{names:?}");
    }
}
