//! Findings about a stack file: each names the file, line and column, the field path and
//! what to do about it. The loader reports every finding, not only the first.

use std::fmt;

/// A position in a file: line and column 1-based; `file` indexes the files of the
/// [`Diagnostics`] (a stack read from several files, `stack deploy -c a.yaml -c b.yaml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub file: u16,
    pub line: u32,
    pub column: u32,
}

impl Span {
    /// A position in the first (or only) file.
    pub fn at(line: u32, column: u32) -> Span {
        Span {
            file: 0,
            line,
            column,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// Absent for findings about the file as a whole (unreadable, missing).
    pub span: Option<Span>,
    /// The field path, such as `services.web.deploy.replicas`; empty for the whole file.
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `web.yaml:12:16: error: services.web.deploy.replicas: …`, the form editors and
    /// terminals turn into links, then an indented help line when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(span) = self.span {
            write!(f, ":{}:{}", span.line, span.column)?;
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {severity}: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The findings about the files of one stack, as they are made.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The files' names as shown, indexed by `Span::file`.
    files: Vec<String>,
    /// The file that findings without a position are about.
    current: u16,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            files: vec![file.into()],
            current: 0,
            items: Vec::new(),
        }
    }

    /// Starts the findings about another file of the stack; returns its index, for its
    /// spans.
    pub fn next_file(&mut self, file: impl Into<String>) -> u16 {
        self.files.push(file.into());
        self.current = (self.files.len() - 1) as u16;
        self.current
    }

    /// The file being read: the one spans are made for.
    pub fn current_file(&self) -> u16 {
        self.current
    }

    pub fn error(
        &mut self,
        span: Option<Span>,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Error, span, path, message.into())
    }

    pub fn warning(
        &mut self,
        span: Option<Span>,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Warning, span, path, message.into())
    }

    fn push(
        &mut self,
        severity: Severity,
        span: Option<Span>,
        path: &str,
        message: String,
    ) -> &mut Diagnostic {
        let file = span.map_or(self.current, |s| s.file);
        self.items.push(Diagnostic {
            severity,
            file: self.files[usize::from(file)].clone(),
            span,
            path: path.to_owned(),
            message,
            help: None,
        });
        self.items.last_mut().expect("just pushed")
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The findings in file order (file, line, column), errors before warnings at one place.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        let files = self.files;
        self.items.sort_by_key(|d| {
            let file = files.iter().position(|f| *f == d.file);
            (file, d.span.is_some(), d.span, d.severity)
        });
        self.items.dedup();
        self.items
    }
}

impl Diagnostic {
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }
}

/// The closest of `candidates` to a misspelt `word`, when one is close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_a_compiler() {
        let mut diags = Diagnostics::new("stacks/web.yaml");
        diags
            .error(
                Some(Span::at(12, 16)),
                "services.web.deploy.replicas",
                "expected an integer",
            )
            .help("write a whole number");
        diags.warning(None, "", "whole file");
        let printed: Vec<String> = diags
            .into_sorted()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            printed,
            [
                "stacks/web.yaml: warning: whole file",
                "stacks/web.yaml:12:16: error: services.web.deploy.replicas: expected an integer\n  help: write a whole number",
            ]
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["replicas", "placement", "resources", "restart_policy"];
        assert_eq!(did_you_mean("replica", keys), Some("replicas"));
        assert_eq!(did_you_mean("restart_polcy", keys), Some("restart_policy"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
