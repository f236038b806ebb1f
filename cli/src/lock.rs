//! Autolock, with Docker's spellings: `swarm init --autolock`, `swarm cluster update
//! --autolock=true|false` (Docker's `swarm update`), `swarm unlock` and `swarm unlock-key
//! [--rotate] [-q]`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use swarm_api::grpc::control::{UnlockKeyRequest, UnlockRequest, UpdateAutolockRequest};

use crate::client::{self, Host};

/// Unlock this manager of an autolocked cluster (the key is read from the terminal or stdin)
#[derive(Debug, Args)]
pub struct UnlockArgs {}

/// Show the cluster's unlock key, or replace it
#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Replace the unlock key: managers then unlock with the new one only
    #[arg(long)]
    rotate: bool,
    /// Print only the key
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Change the cluster's settings
    Update(ClusterUpdateArgs),
}

#[derive(Debug, Args)]
pub struct ClusterUpdateArgs {
    /// Managers need the unlock key to start after a restart (true|false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    autolock: Option<bool>,
}

/// How the unlock key is shown, as Docker shows it.
fn print_unlock_key(key: &str) {
    println!(
        "To unlock a swarm manager after it restarts, run the `swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager: without it you\nwill not be able to restart the manager."
    );
}

/// What `init --autolock` adds to its output.
pub fn print_init_unlock_key(key: &str) {
    if !key.is_empty() {
        println!();
        print_unlock_key(key);
    }
}

/// Reads the key: from the terminal without echo (as `docker swarm unlock` does), else the
/// first line of stdin.
fn read_unlock_key() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the unlock key from stdin")?;
        return Ok(line.trim().to_owned());
    }
    eprint!("Enter unlock key: ");
    std::io::stderr().flush().ok();
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.context("cannot read the unlock key from the terminal")?;
    Ok(line.trim().to_owned())
}

/// The terminal's echo turned off while it lives.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: tcgetattr and tcsetattr on stdin with a termios this function owns.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

pub async fn unlock(host: &Host, _args: UnlockArgs) -> anyhow::Result<ExitCode> {
    let unlock_key = read_unlock_key()?;
    let mut client = client::connect(host).await?;
    client
        .unlock(UnlockRequest { unlock_key })
        .await
        .map_err(client::explain)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn unlock_key(host: &Host, args: UnlockKeyArgs) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let key = client
        .unlock_key(UnlockKeyRequest {
            rotate: args.rotate,
        })
        .await
        .map_err(client::explain)?
        .into_inner()
        .unlock_key;
    if args.quiet {
        println!("{key}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.rotate {
        println!("Successfully rotated manager unlock key.\n");
    }
    print_unlock_key(&key);
    Ok(ExitCode::SUCCESS)
}

pub async fn cluster(host: &Host, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Update(args) = command;
    let Some(autolock) = args.autolock else {
        anyhow::bail!("nothing to update: give a setting (--autolock=true|false)");
    };
    let mut client = client::connect(host).await?;
    let key = client
        .update_autolock(UpdateAutolockRequest { autolock })
        .await
        .map_err(client::explain)?
        .into_inner()
        .unlock_key;
    println!("Swarm updated.");
    if !key.is_empty() {
        print_unlock_key(&key);
    }
    Ok(ExitCode::SUCCESS)
}
