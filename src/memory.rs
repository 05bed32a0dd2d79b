//! Process-wide memory: tuning for short, allocation-heavy commands, and what the process holds
//! now ([`resident_bytes`], reported by `wms-serve`'s management API).

/// Huge pages are 2 MiB on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Lets the C heap that follows grow in `pad`-sized steps backed by transparent huge pages.
///
/// `wms detect-changes` spends a sixth of its time in page faults: libgit2 keeps up to 16 MiB of
/// delta bases and parsed trees while it walks, and every fresh 4 KiB page of heap costs a
/// fault. With the next `pad` bytes of heap reserved at once and advised `MADV_HUGEPAGE`, the
/// kernel maps that range 2 MiB at a time (what `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` does,
/// without re-executing the process). Where transparent huge pages are off, or `madvise`
/// fails, nothing changes but the step size.
///
/// Call it before the allocations it should cover; it is not meant for long-running processes
/// (it never gives the padding back to the system).
#[cfg(target_os = "linux")]
pub fn prefer_huge_pages_for_heap(pad: usize) {
    // SAFETY: mallopt, malloc, free and sbrk(0) are used as documented (sbrk(0) only reads the
    // break); every block taken here is freed here. madvise covers pages the heap already owns
    // (below the break) and changes only how they are backed, never their contents.
    unsafe {
        if libc::mallopt(libc::M_TOP_PAD, pad as libc::c_int) != 1 {
            return;
        }
        // Take blocks (below the mmap threshold, so from the heap) until malloc has to move
        // the break, which it now does by `pad` more than it needs; freeing them leaves that
        // padding in place (trimming keeps `M_TOP_PAD`).
        const BLOCK: usize = 96 << 10;
        let before = libc::sbrk(0);
        let mut held = [std::ptr::null_mut::<libc::c_void>(); 64];
        for slot in held.iter_mut() {
            *slot = libc::malloc(BLOCK);
            if slot.is_null() || libc::sbrk(0) != before {
                break;
            }
        }
        for p in held {
            libc::free(p);
        }
        let end = libc::sbrk(0) as usize;
        if end == usize::MAX || end == before as usize {
            return;
        }
        let start = (end.saturating_sub(pad) + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        if start < end {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn prefer_huge_pages_for_heap(_pad: usize) {}

/// Caps glibc's malloc arenas at `n` unless the environment already chose (`MALLOC_ARENA_MAX`,
/// or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). glibc gives each thread that allocates
/// under contention an arena of its own (up to 8 per core) and rarely hands their freed blocks
/// back, so a server whose request buffers are allocated and freed on many threads keeps the
/// high-water mark of each. Call it first thing in `main`, before other threads exist.
/// `wms-serve` under concurrency 8 holds 20–90 MB less with 2 (docs/PERFORMANCE.md).
pub fn limit_malloc_arenas(n: usize) {
    use crate::env_vars::{GLIBC_TUNABLES, MALLOC_ARENA_MAX};
    let chosen = std::env::var_os(MALLOC_ARENA_MAX).is_some()
        || std::env::var(GLIBC_TUNABLES).is_ok_and(|t| t.contains("glibc.malloc.arena_max"));
    if chosen {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; valid at any time.
    unsafe {
        libc::mallopt(
            libc::M_ARENA_MAX,
            n.clamp(1, i32::MAX as usize) as libc::c_int,
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// Bytes of memory the process holds now (its resident set: `/proc/self/statm`'s second field
/// in pages). `None` where there is no procfs.
pub fn resident_bytes() -> Option<u64> {
    let statm = fs_err::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_bytes_follow_what_the_process_touches() {
        let before = resident_bytes().expect("procfs");
        // 64 MiB written page by page, so every page becomes resident.
        let block = vec![1u8; 64 << 20];
        let after = resident_bytes().unwrap();
        assert!(
            std::hint::black_box(&block)
                .iter()
                .step_by(4096)
                .all(|b| *b == 1)
        );
        // Other tests run in this process too, so only what this one holds is certain.
        assert!(before > 1 << 20, "{before}");
        assert!(after >= 64 << 20, "{before} -> {after}");
    }
}
