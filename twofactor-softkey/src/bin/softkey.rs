//! DEV ONLY: makes and adjusts soft keys from a shell, for tests.
//!
//! ```text
//! softkey new FILE [--ed25519]      a new key (ES256 unless --ed25519)
//! softkey set FILE KNOB VALUE       present, omit_up, omit_uv, counter_mode, wrong_rp_id,
//!                                   decline, algorithm, pin ('' for none), counter
//! softkey show FILE                 the state as JSON, without private keys or the PIN
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twofactor_softkey::{Algorithm, SoftKey, SoftKeyError};

/// A software FIDO2 key for twofactor's tests. Its private keys are stored in clear.
#[derive(Parser)]
#[command(name = "softkey")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new soft key file (mode 0600).
    New {
        file: PathBuf,
        /// Make Ed25519 credentials instead of ES256.
        #[arg(long)]
        ed25519: bool,
    },
    /// Set a knob.
    Set {
        file: PathBuf,
        knob: String,
        value: String,
    },
    /// Print the state without secrets.
    Show { file: PathBuf },
}

fn run(cli: Cli) -> Result<(), SoftKeyError> {
    match cli.command {
        Command::New { file, ed25519 } => {
            let algorithm = if ed25519 {
                Algorithm::Ed25519
            } else {
                Algorithm::Es256
            };
            SoftKey::create(file, algorithm).map(drop)
        }
        Command::Set { file, knob, value } => SoftKey::open(file)?.set_knob(&knob, &value),
        Command::Show { file } => {
            let state = SoftKey::open(file)?.state()?;
            println!("{:#}", state.public_json());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softkey: {e}");
            ExitCode::FAILURE
        }
    }
}
