//! Pulls one image into a store, for `bench/pull-vs-skopeo.sh`:
//!
//!     pull [--fetch-only] REFERENCE STORE_DIR
//!
//! `--fetch-only` fetches and verifies the blobs without unpacking them (what
//! `skopeo copy docker://… dir:…` does). Prints the manifest digest and the time the pull
//! took inside the process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use swarm_agent::image::{ImageStore, PullOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fetch_only = args.first().is_some_and(|a| a == "--fetch-only");
    if fetch_only {
        args.remove(0);
    }
    let [reference, store_dir] = &args[..] else {
        eprintln!("usage: pull [--fetch-only] REFERENCE STORE_DIR");
        return ExitCode::from(2);
    };
    let store = match ImageStore::open(&PathBuf::from(store_dir), PullOptions::default()) {
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
        store.pull(reference).await.map(|image| image.digest)
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
