//! Enumerating the name service's accounts (getpwent_r), for listings such as
//! `twofactorctl admin list`: nix has no wrapper for it. The enumeration cursor is process-wide,
//! so one lock serializes its users. No decision depends on what this returns.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::sync::Mutex;

use crate::identity::Listed;

/// Serializes setpwent/getpwent_r/endpwent: the cursor is shared by the whole process.
static CURSOR: Mutex<()> = Mutex::new(());

/// Largest buffer offered to getpwent_r for one entry.
const MAX_BUF: usize = 1 << 20;

/// Up to `limit` accounts, and whether there were more.
pub fn users(limit: usize) -> std::io::Result<(Vec<Listed>, bool)> {
    let _guard = CURSOR.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: setpwent takes no argument; CURSOR is held, so no other thread of this process
    // moves the cursor until endpwent below.
    unsafe { libc::setpwent() };
    let mut buf: Vec<libc::c_char> = vec![0; 16 << 10];
    let mut out = Vec::new();
    let mut more = false;
    let result = loop {
        // SAFETY: an all-zero `passwd` is a valid value of this plain C struct (null pointers).
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `entry`, `buf` (of `buf.len()` bytes) and `found` are valid and writable for
        // the call; on success the strings of `entry` point into `buf`.
        let rc = unsafe { libc::getpwent_r(&mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            // glibc hands out the same entry again with a larger buffer.
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc == libc::ENOENT || (rc == 0 && found.is_null()) {
            break Ok(());
        }
        if rc != 0 {
            break Err(std::io::Error::from_raw_os_error(rc));
        }
        if out.len() >= limit {
            more = true;
            break Ok(());
        }
        if entry.pw_name.is_null() {
            continue;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`, which is alive
        // and not written to until the next call.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        // A name that is not UTF-8 cannot be named in the policy or on the bus: skipped.
        if let Ok(name) = name.to_str() {
            out.push(Listed {
                name: name.to_string(),
                uid: entry.pw_uid,
                gid: entry.pw_gid,
            });
        }
    };
    // SAFETY: endpwent takes no argument; CURSOR is still held.
    unsafe { libc::endpwent() };
    result.map(|()| (out, more))
}
