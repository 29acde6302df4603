//! The process's open-file limit. Every agent's WebSocket, every TLS or TURN connection and
//! each call's media sockets hold a descriptor, and systemd starts services with a soft limit
//! of 1024 (the hard limit is 524288): left there, the gateway would refuse connections at
//! about a thousand agents, whatever its per-source limits say. The daemon raises the soft limit
//! to the hard one at start, as Go's runtime does for every program; it never touches the hard
//! limit (that is the operator's, e.g. `LimitNOFILE=` in the unit).

/// Below this many descriptors the daemon warns: room for a few thousand agents and their calls.
pub const WANTED_OPEN_FILES: u64 = 16_384;

/// The soft open-file limit before and after raising it to the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; an error leaves the limit as it was.
pub fn raise_open_files() -> std::io::Result<OpenFiles> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFiles { before, now: limit.rlim_cur, hard: limit.rlim_max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let files = raise_open_files().unwrap();
        assert_eq!(files.now, files.hard);
        assert!(files.now >= files.before);
    }
}
