//! Pulls one image into a store, for `bench/pull-vs-skopeo.sh`:
//!
//!     pull [--fetch-only] [--user USER:PASSWORD] REFERENCE STORE_DIR
//!
//! `--fetch-only` fetches and verifies the blobs without unpacking them (what
//! `skopeo copy docker://… dir:…` does). `--user` sends basic credentials: with a pull,
//! as a task's service brings them (`pull_with`). Prints the manifest digest and the time the pull
//! took inside the process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use std::collections::HashMap;

use swarm_agent::image::{Credentials, ImageStore, PullOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fetch_only = args.first().is_some_and(|a| a == "--fetch-only");
    if fetch_only {
        args.remove(0);
    }
    let user = match args.first().map(String::as_str) {
        Some("--user") if args.len() > 1 => {
            let user = args.drain(..2).nth(1).unwrap_or_default();
            user.split_once(':')
                .map(|(username, password)| Credentials {
                    username: username.into(),
                    password: password.into(),
                })
        }
        _ => None,
    };
    let [reference, store_dir] = &args[..] else {
        eprintln!("usage: pull [--fetch-only] [--user USER:PASSWORD] REFERENCE STORE_DIR");
        return ExitCode::from(2);
    };
    let registry = reference.split('/').next().unwrap_or_default().to_owned();
    let credentials: HashMap<String, Credentials> =
        user.into_iter().map(|c| (registry.clone(), c)).collect();
    // `fetch` takes the store's credentials; `pull_with` those of the pull.
    let options = PullOptions {
        credentials: if fetch_only {
            credentials.clone()
        } else {
            HashMap::new()
        },
        ..PullOptions::default()
    };
    let store = match ImageStore::open(&PathBuf::from(store_dir), options) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("pull: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let digest = if fetch_only {
        store.fetch(reference).await
    } else {
        store
            .pull_with(reference, &credentials)
            .await
            .map(|image| image.digest)
    };
    match digest {
        Ok(digest) => {
            println!("{digest} {:.3} ms", start.elapsed().as_secs_f64() * 1e3);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pull: {e}");
            ExitCode::FAILURE
        }
    }
}
