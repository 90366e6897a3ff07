//! A minimal SMTP server for the mail test: listens on 127.0.0.1:25 (in whatever network
//! namespace it is started in), accepts every message, and appends each one to FILE as
//! `MAIL FROM:`, `RCPT TO:` lines and the data, then a line `--- end of message ---`. Prints
//! `ready` on standard output once it listens. Runs until killed.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream, out: &std::path::Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    let mut message = String::new();
    w.write_all(b"220 localhost ESMTP test catcher\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            w.write_all(b"250 localhost\r\n")?;
        } else if cmd.starts_with("MAIL FROM:") || cmd.starts_with("RCPT TO:") {
            message.push_str(line.trim_end());
            message.push('\n');
            w.write_all(b"250 ok\r\n")?;
        } else if cmd == "DATA" {
            w.write_all(b"354 go ahead\r\n")?;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line.trim_end_matches(['\r', '\n']) == "." {
                    break;
                }
                message.push_str(line.trim_end_matches(['\r', '\n']));
                message.push('\n');
            }
            message.push_str("--- end of message ---\n");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)?;
            f.write_all(message.as_bytes())?;
            message.clear();
            w.write_all(b"250 queued\r\n")?;
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: smtp-catcher FILE");
        std::process::exit(2);
    };
    let out = std::path::PathBuf::from(out);
    let listener = match TcpListener::bind("127.0.0.1:25") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("smtp-catcher: cannot listen on 127.0.0.1:25: {e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    for stream in listener.incoming().flatten() {
        if let Err(e) = serve(stream, &out) {
            eprintln!("smtp-catcher: {e}");
        }
    }
}
