//! Feeds arbitrary bytes to the stack file loader as `stack.yaml`, the only file in an
//! in-memory source tree, with an empty environment. The loader must report problems as
//! diagnostics; any panic (or abort, timeout, OOM) is a finding.

#![no_main]

use std::io;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use swarm_controller::source::SourceTree;

const STACK: &str = "stack.yaml";

/// A tree with a single file, `stack.yaml`; no directories.
struct OneFile<'a>(&'a [u8]);

impl SourceTree for OneFile<'_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok((path == Path::new(STACK)).then(|| self.0.to_vec()))
    }

    fn list(&self, _dir: &Path) -> io::Result<Option<Vec<String>>> {
        Ok(None)
    }
}

fuzz_target!(|data: &[u8]| {
    let tree = OneFile(data);
    let loaded = swarm_controller::stack::load(&tree, Path::new(STACK), STACK, &|_| None);
    // Exercise the findings' formatting too.
    for diag in &loaded.diagnostics {
        let _ = diag.to_string();
    }
});
