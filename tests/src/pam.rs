//! Real libpam, in process: `pam_start_confdir` + `pam_authenticate` with a scripted
//! conversation. Used by `pamdrive` (one login per process) and the login benchmark.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
}

const PAM_RHOST: c_int = 4;
const PAM_TTY: c_int = 3;
const PAM_CONV_ERR: c_int = 19;
const PAM_SUCCESS: c_int = 0;
/// pam_authenticate flag: the application wants no informational or error messages.
pub const PAM_SILENT: c_int = 0x8000;

/// The scripted user: answers in order; everything shown is recorded.
pub struct Script {
    /// Answers still to give.
    pub answers: Vec<String>,
    /// What the module showed: {"style", "text"}.
    pub transcript: Vec<serde_json::Value>,
    /// How long the user takes before each answer (zero: at once).
    pub pause: std::time::Duration,
}

extern "C" fn converse(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: libpam passes the appdata pointer we gave it (a live &mut Script), `n` messages
    // and a slot for the response array, per pam_conv(3).
    unsafe {
        let script = &mut *(appdata as *mut Script);
        let n = n.max(0) as usize;
        let out = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if out.is_null() {
            return PAM_CONV_ERR;
        }
        for i in 0..n {
            let m = &**msgs.add(i);
            let text = CStr::from_ptr(m.msg).to_string_lossy().into_owned();
            let style = match m.msg_style {
                1 => "prompt",
                2 => "prompt-echo",
                3 => "error",
                4 => "info",
                _ => "other",
            };
            script
                .transcript
                .push(serde_json::json!({"style": style, "text": text}));
            if m.msg_style == 1 || m.msg_style == 2 {
                if script.answers.is_empty() {
                    script
                        .transcript
                        .push(serde_json::json!({"style": "unexpected-prompt", "text": text}));
                    libc::free(out as *mut c_void);
                    return PAM_CONV_ERR;
                }
                std::thread::sleep(script.pause);
                let answer = script.answers.remove(0);
                let answer = resolve(answer, &script.transcript);
                let a = CString::new(answer).unwrap_or_default();
                (*out.add(i)).resp = libc::strdup(a.as_ptr());
            }
        }
        *resp = out;
        PAM_SUCCESS
    }
}

/// Answers that are instructions rather than text:
/// `@oath-after:PATH` creates `PATH.ready`, waits (up to 60 s) until `PATH` exists, then
/// answers with the current `oathtool` code of the last `Secret: …` the module showed. It lets
/// a test pause a login at its enrollment prompt and act meanwhile (a race, performed for real).
fn resolve(answer: String, transcript: &[serde_json::Value]) -> String {
    let Some(path) = answer.strip_prefix("@oath-after:") else {
        return answer;
    };
    let _ = std::fs::write(format!("{path}.ready"), b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !Path::new(path).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let secret = transcript
        .iter()
        .rev()
        .filter_map(|m| m["text"].as_str())
        .find_map(|t| t.split("Secret: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    std::process::Command::new("oathtool")
        .args(["--totp", "-b", &secret])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Threads of this process (from /proc/self/task).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One authentication: returns pam_authenticate's code, its pam_strerror text, and the number
/// of threads right after pam_authenticate returned (before pam_end).
pub fn authenticate(
    confdir: &Path,
    service: &str,
    user: &str,
    rhost: Option<&str>,
    tty: Option<&str>,
    script: &mut Script,
) -> Result<(i32, String, usize), String> {
    authenticate_with_flags(confdir, service, user, rhost, tty, 0, script)
}

/// [`authenticate`] with `flags` for pam_authenticate (e.g. [`PAM_SILENT`]).
pub fn authenticate_with_flags(
    confdir: &Path,
    service: &str,
    user: &str,
    rhost: Option<&str>,
    tty: Option<&str>,
    flags: c_int,
    script: &mut Script,
) -> Result<(i32, String, usize), String> {
    use std::os::unix::ffi::OsStrExt;
    let confdir = CString::new(confdir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let service = CString::new(service).map_err(|e| e.to_string())?;
    let user = CString::new(user).map_err(|e| e.to_string())?;
    let conv = PamConv {
        conv: converse,
        appdata_ptr: script as *mut Script as *mut c_void,
    };
    let mut pamh: *mut c_void = ptr::null_mut();
    let rc = unsafe {
        pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            confdir.as_ptr(),
            &mut pamh,
        )
    };
    if rc != PAM_SUCCESS {
        return Err(format!("pam_start_confdir failed: {rc}"));
    }
    for (item, value) in [(PAM_RHOST, rhost), (PAM_TTY, tty)] {
        if let Some(v) = value {
            let c = CString::new(v).map_err(|e| e.to_string())?;
            unsafe { pam_set_item(pamh, item, c.as_ptr() as *const c_void) };
        }
    }
    let rc = unsafe { pam_authenticate(pamh, flags) };
    let during = threads();
    let name = unsafe { CStr::from_ptr(pam_strerror(pamh, rc)) }
        .to_string_lossy()
        .into_owned();
    unsafe { pam_end(pamh, rc) };
    Ok((rc, name, during))
}
