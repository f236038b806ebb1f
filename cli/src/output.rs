//! What several commands print the same way: findings about stack files.

use std::io::Write;

use swarm_controller::stack::{Diagnostic, Severity};

/// Findings to stderr, one a line, then the count of errors when there are any.
pub fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        let _ = writeln!(stderr, "{errors} error(s) in {}", diagnostics[0].file);
    }
}
