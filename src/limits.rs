//! The process's open-files limit.
//!
//! The proxy holds three descriptors per connection, and `show --merge` and `pcap`
//! hold every log of a run open at once; the usual soft limit of 1024 is far below
//! what the hard limit allows.

/// Raises the soft open-files limit to the hard limit. Best effort: if the limits
/// cannot be read or changed, the process runs with what it has.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
