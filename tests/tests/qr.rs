//! The enrollment QR code as a person sees it: the text the CLI prints (and the login sends) is
//! drawn the way a terminal would draw it, once with a dark theme (light text on black) and
//! once with a light theme (dark text on white), and the picture is scanned with `zbarimg`
//! (zbar-tools), an independent decoder. It must give back the URI.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use twofactor_tests::*;

/// A terminal theme: the default foreground and background grey levels.
#[derive(Debug, Clone, Copy)]
struct Theme {
    fg: u8,
    bg: u8,
}

const DARK: Theme = Theme { fg: 230, bg: 20 };
const LIGHT: Theme = Theme { fg: 20, bg: 250 };

/// Draws `text` as a terminal with `theme` would: SGR colour escapes (30/37/90/97 foreground,
/// 40/47/100/107 background, 39/49/0 back to the theme), each character cell one pixel wide and
/// two high (the half blocks' upper and lower halves). Returns rows of grey pixels.
fn draw(text: &str, theme: Theme) -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    let (mut fg, mut bg) = (theme.fg, theme.bg);
    for line in text.lines() {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                assert_eq!(chars.next(), Some('['), "only CSI sequences expected");
                let mut params = String::new();
                for p in chars.by_ref() {
                    if p == 'm' {
                        break;
                    }
                    params.push(p);
                }
                for p in params.split(';') {
                    match p {
                        "" | "0" => (fg, bg) = (theme.fg, theme.bg),
                        "30" | "90" => fg = 0,
                        "37" | "97" => fg = 255,
                        "39" => fg = theme.fg,
                        "40" | "100" => bg = 0,
                        "47" | "107" => bg = 255,
                        "49" => bg = theme.bg,
                        other => panic!("unexpected SGR {other}"),
                    }
                }
                continue;
            }
            let (t, b) = match c {
                '█' => (fg, fg),
                '▀' => (fg, bg),
                '▄' => (bg, fg),
                ' ' => (bg, bg),
                other => panic!("unexpected character {other:?} in the QR code"),
            };
            top.push(t);
            bottom.push(b);
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

/// Writes the picture (scaled up, on a margin of the theme's background) as a PGM file and
/// scans it with zbarimg; returns what it decoded, if anything.
fn scan(pixels: &[Vec<u8>], theme: Theme, path: &Path) -> Option<String> {
    const SCALE: usize = 6;
    const MARGIN: usize = 8;
    let w = pixels.iter().map(Vec::len).max().unwrap_or(0);
    let (width, height) = (
        (w + 2 * MARGIN) * SCALE,
        (pixels.len() + 2 * MARGIN) * SCALE,
    );
    let mut data = format!("P5\n{width} {height}\n255\n").into_bytes();
    for y in 0..height {
        for x in 0..width {
            let (py, px) = (
                (y / SCALE).checked_sub(MARGIN),
                (x / SCALE).checked_sub(MARGIN),
            );
            let v = match (py, px) {
                (Some(py), Some(px)) => pixels
                    .get(py)
                    .and_then(|r| r.get(px))
                    .copied()
                    .unwrap_or(theme.bg),
                _ => theme.bg,
            };
            data.push(v);
        }
    }
    std::fs::write(path, data).expect("pgm");
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(path)
        .output()
        .expect("zbarimg (Debian package zbar-tools; scripts/deps.sh)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The QR code's lines in `text`: the run of lines made only of half blocks, spaces and escapes.
fn qr_lines(text: &str) -> String {
    let is_qr = |l: &str| {
        let visible: String = strip_escapes(l);
        !visible.is_empty()
            && visible.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' '))
            && visible.contains(['█', '▀', '▄'])
    };
    text.lines()
        .skip_while(|l| !is_qr(l))
        .take_while(|l| is_qr(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn strip_escapes(l: &str) -> String {
    let mut out = String::new();
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for p in chars.by_ref() {
                if p == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_clis_qr_code_scans_on_dark_and_light_themes() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"optional\"\n");
    let out = env
        .ctl_as(ALICE, &["enroll", "totp", "--begin"], None)
        .ok()
        .stdout;
    let uri = out
        .lines()
        .find_map(|l| l.strip_prefix("URI: "))
        .expect("the URI is printed")
        .to_string();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let qr = qr_lines(&out);
    assert!(qr.lines().count() > 10, "no QR code in: {out}");
    for (name, theme) in [("dark", DARK), ("light", LIGHT)] {
        let path = env.dir.path().join(format!("cli-{name}.pgm"));
        assert_eq!(
            scan(&draw(&qr, theme), theme, &path).as_deref(),
            Some(uri.as_str()),
            "the QR code does not scan on a {name} theme"
        );
    }
    // --no-qr: the plain fallback, the secret and the URI.
    let plain = env
        .ctl_as(ALICE, &["enroll", "totp", "--begin", "--no-qr"], None)
        .ok()
        .stdout;
    assert!(qr_lines(&plain).is_empty(), "{plain}");
    assert!(plain.contains("secret by hand: ") && plain.contains("URI: otpauth://"));
}

#[test]
fn the_enrollment_at_login_qr_code_scans() {
    ensure_test_accounts();
    let env = Env::new("default_mode = \"required\"\nenroll_at_login = true\n");
    // A console login (no remote host): forced colours, both themes.
    let r = env.login("tf", BOB, &[]);
    let text: String = r
        .transcript
        .iter()
        .map(|s| format!("{}\n", s.text))
        .collect();
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("URI: "))
        .expect("URI shown")
        .to_string();
    let qr = qr_lines(&text);
    assert!(
        qr.contains('\u{1b}'),
        "a console login draws in forced colours"
    );
    for (name, theme) in [("dark", DARK), ("light", LIGHT)] {
        let path = env.dir.path().join(format!("login-{name}.pgm"));
        assert_eq!(
            scan(&draw(&qr, theme), theme, &path).as_deref(),
            Some(uri.as_str()),
            "console login, {name} theme"
        );
    }
    // Over SSH (a remote host): no escapes (the client would show them as text); drawn for a
    // dark terminal, with the secret beside it and a word on light themes.
    let r = env.login_full("root", "tf", BOB, Some("192.0.2.8"), &[]);
    let text: String = r
        .transcript
        .iter()
        .map(|s| format!("{}\n", s.text))
        .collect();
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("drawn for a dark terminal"), "{text}");
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("URI: "))
        .expect("URI shown")
        .to_string();
    let path = env.dir.path().join("ssh-dark.pgm");
    assert_eq!(
        scan(&draw(&qr_lines(&text), DARK), DARK, &path).as_deref(),
        Some(uri.as_str())
    );
}
