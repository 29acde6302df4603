//! Giving memory back to the system after a burst. glibc's allocator keeps freed memory in its
//! per-thread arenas, so the pages a flood took (tens of MiB of parsed datagrams spread over
//! the runtime's threads) stay resident long after the flood, which looks like a leak to an
//! operator and leaves less for the next burst's neighbours. `malloc_trim` returns the free
//! pages of every arena; the daemon calls it on a slow tick.

use std::time::Duration;

/// How often freed memory is handed back: often enough that a flood's high-water mark is gone
/// within seconds, rarely enough that the trim (a walk over the arenas' free lists, well under
/// a millisecond at rest) costs nothing measurable.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists; it takes the arena
    // locks itself and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
