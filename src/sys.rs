//! Thin wrappers over the POSIX calls std does not offer — host and user
//! names, process liveness, ownership and timestamps of symlinks, device
//! nodes — through rustix's safe bindings, and NSS user lookup (so LDAP or
//! systemd users are named too) through uzers.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, CWD};

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The name of the user running cairn.
pub fn username() -> String {
    uzers::get_current_username()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid{}", uid()))
}

pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether a process with this pid exists on this host. A process owned by
/// another user exists too (the kernel says "not permitted", not "no such
/// process").
pub fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Change the owner of `p` without following a symlink.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

/// Set access and modification time (nanoseconds since the epoch) of `p`
/// without following a symlink.
pub fn set_times_nofollow(p: &Path, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let ts = |ns: i64| Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: ts(atime_ns),
        last_modification: ts(mtime_ns),
    };
    rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Create a FIFO or device node; `mode` carries the file type bits.
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    let perm = Mode::from_raw_mode(mode & 0o7777);
    rustix::fs::mknodat(CWD, p, kind, perm, rdev)?;
    Ok(())
}

/// Look up a user name by uid (for display in snapshots), through NSS.
pub fn user_name(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
}

/// Keep glibc's allocator from hoarding memory without paying a page fault
/// per page of every buffer. With glibc's defaults, the megabyte-sized
/// chunk and pack buffers a backup cycles through end up in per-thread
/// arenas that are never given back, and resident memory grows with the
/// amount of data; so the mmap threshold is fixed and the arenas are
/// limited to four. Where it is fixed is a trade:
///
/// - most one-shot commands (`low` false) get 4 MiB: chunk-sized buffers
///   (1 MiB on average) are reused from the arenas, and only pack buffers
///   (16 MiB) are mapped and unmapped. Measured on the 1 GB `mixed` dataset
///   (docs/benchmarks/results-alloc-2026-12-04.md), against 512 KiB: a
///   restore takes 24 k page faults instead of 300 k and 20% less system
///   time, for 20–35 MiB more peak RSS;
/// - `backup` (`low` true) gets 512 KiB: its chunk and pack buffers come
///   from pools of their own (`ops::backup::store`), so what the arenas
///   would keep is mostly fragments: 94–97 MiB peak instead of 118–122 on
///   `mixed`, for 160 k page faults instead of 64 k then (about 0.1 s more
///   system time a GB; 90–109 k since the compressors keep a zstd context
///   for small inputs, `format::codec`);
/// - the daemon, `serve` and `mount` (`low` true), which live for months
///   between runs, get 512 KiB too, so what a run used is given back to
///   the kernel when it ends.
///
/// Call it before the other threads start (`cli::main` does).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator(low: bool) {
    let (mmap, trim) = if low {
        (512 << 10, 128 << 10)
    } else {
        (4 << 20, 16 << 20)
    };
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start-up before other threads exist. No safe binding offers it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator(_low: bool) {}

/// Give the kernel back the free pages inside the allocator's arenas. A
/// large set of small allocations freed at once (a listing of hundreds of
/// thousands of object names) leaves its pages resident otherwise, under
/// whatever is allocated next, as glibc only trims the top of an arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // to the kernel; it takes the arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// User and system CPU seconds this process has used so far, all threads.
#[allow(unsafe_code)]
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given,
    // which points at one; rustix has no binding for it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the struct.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((secs(ru.ru_utime), secs(ru.ru_stime)))
}
