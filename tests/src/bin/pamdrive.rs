//! Drives one real PAM authentication through libpam's `pam_start_confdir`, answering prompts
//! from a script, and prints what happened as JSON: the return code, every message shown, and
//! the thread count of this process before and after (the module must leave none behind).
//!
//! usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [ANSWER...]
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
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

struct Script {
    answers: Vec<String>,
    transcript: Vec<serde_json::Value>,
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
                let a = CString::new(script.answers.remove(0)).unwrap_or_default();
                (*out.add(i)).resp = libc::strdup(a.as_ptr());
            }
        }
        *resp = out;
        PAM_SUCCESS
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: pamdrive CONFDIR SERVICE USER [--rhost HOST] [--tty TTY] [ANSWER...]");
        std::process::exit(2);
    }
    let confdir = CString::new(args.remove(0)).unwrap_or_default();
    let service = CString::new(args.remove(0)).unwrap_or_default();
    let user = CString::new(args.remove(0)).unwrap_or_default();
    let mut rhost = None;
    let mut tty = None;
    let mut answers = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rhost" => rhost = it.next(),
            "--tty" => tty = it.next(),
            _ => answers.push(a),
        }
    }
    let mut script = Script {
        answers,
        transcript: Vec::new(),
    };
    let conv = PamConv {
        conv: converse,
        appdata_ptr: &mut script as *mut Script as *mut c_void,
    };
    let before = threads();
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
        eprintln!("pam_start_confdir failed: {rc}");
        std::process::exit(1);
    }
    for (item, value) in [(PAM_RHOST, rhost), (PAM_TTY, tty)] {
        if let Some(v) = value {
            let c = CString::new(v).unwrap_or_default();
            unsafe { pam_set_item(pamh, item, c.as_ptr() as *const c_void) };
        }
    }
    let rc = unsafe { pam_authenticate(pamh, 0) };
    let name = unsafe { CStr::from_ptr(pam_strerror(pamh, rc)) }
        .to_string_lossy()
        .into_owned();
    let during = threads();
    unsafe { pam_end(pamh, rc) };
    let after = threads();
    let out = serde_json::json!({
        "rc": rc,
        "error": name,
        "transcript": script.transcript,
        "answers_left": script.answers.len(),
        "threads_before": before,
        "threads_after_auth": during,
        "threads_after_end": after,
    });
    println!("{out}");
}
