//! The process's file-descriptor limit against the connection limit.
//!
//! Every open connection holds a descriptor. A process whose soft limit
//! (often 1,024) is below the connection limit runs out of descriptors
//! first: accepting then fails, and so does everything else that opens one
//! (database connections, files). So serving raises the soft limit toward
//! the hard one as far as the connection limit needs, and warns when even
//! the hard limit is short.

/// Descriptors the process needs besides its connections: database
/// connections (16 by default, plus the pipeline's, one per shard and
/// append in flight), the listener, standard streams, log and catalog files.
const DESCRIPTORS_RESERVED: u64 = 256;

/// Raises the soft limit of open files to what `connections_max`
/// connections need, as far as the hard limit allows, and warns when it
/// stays short.
pub(super) fn ensure_for(connections_max: usize) {
    let needed = u64::try_from(connections_max)
        .unwrap_or(u64::MAX)
        .saturating_add(DESCRIPTORS_RESERVED);
    #[cfg(unix)]
    unix::ensure(needed, connections_max);
    #[cfg(not(unix))]
    let _ = (needed, connections_max);
}

/// The soft limit to set, given the current `soft` and `hard` limits and
/// the descriptors `needed`; `None` when it suffices or cannot be raised.
fn raised_limit(soft: u64, hard: u64, needed: u64) -> Option<u64> {
    let target = needed.min(hard);
    (soft < target).then_some(target)
}

#[cfg(unix)]
mod unix {
    use super::raised_limit;

    pub(super) fn ensure(needed: u64, connections_max: usize) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into `limit`, a valid rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "cannot read the limit of open files");
            return;
        }
        // rlim_t is u64 here, but u32 on some 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let (hard, mut soft) = (u64::from(limit.rlim_max), u64::from(limit.rlim_cur));
        if let Some(target) = raised_limit(soft, hard, needed) {
            let raised = libc::rlimit {
                // At most the hard limit, so it fits an rlim_t.
                rlim_cur: target as libc::rlim_t,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit only reads `raised`, a valid rlimit.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                tracing::info!(
                    from = soft,
                    to = target,
                    "raised the soft limit of open files"
                );
                soft = target;
            } else {
                let error = std::io::Error::last_os_error();
                tracing::warn!(%error, "cannot raise the soft limit of open files");
            }
        }
        if soft < needed {
            tracing::warn!(
                limit = soft,
                needed,
                connections_max,
                "the limit of open files is below what the connection limit needs; \
                 raise it (ulimit -n, LimitNOFILE=) or lower --connections-max"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::raised_limit;

    #[test]
    fn the_soft_limit_is_raised_to_what_is_needed_and_never_past_the_hard_one() {
        // Proves: a sufficient limit is kept, a short one is raised to the
        // need, and never past the hard limit, nor lowered.
        assert_eq!(raised_limit(20_000, 20_000, 1_280), None);
        assert_eq!(raised_limit(1_024, 524_288, 1_280), Some(1_280));
        assert_eq!(raised_limit(1_024, 1_100, 1_280), Some(1_100));
        assert_eq!(raised_limit(1_024, 1_024, 1_280), None);
    }
}
