//! Descriptor diagnostics: a message blamed on a byte range of a file,
//! rendered cargo-style with `--> file:line:col`, the line and a caret.
//!
//! Loading never stops at the first problem: every check pushes into
//! [`Diagnostics`] and `kmatrix check` prints them all, sorted by file and
//! position, so one run shows everything to fix.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use annotate_snippets::{Level, Renderer, Snippet};

/// A file whose text diagnostics point into.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown to the user (`<builtin>/boards/x.toml` for shipped files).
    pub display: String,
    pub text: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: Option<SourceFile>,
    pub span: Option<Range<usize>>,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    /// 1-based line and column of the span start (columns count characters).
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let file = self.file.as_ref()?;
        let start = clamp(self.span.clone()?, &file.text).start;
        let before = &file.text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Some((line, col))
    }

    /// `file:line:col`, or just the file when there is no span.
    pub fn location(&self) -> String {
        match (&self.file, self.line_col()) {
            (Some(f), Some((l, c))) => format!("{}:{l}:{c}", f.display),
            (Some(f), None) => f.display.clone(),
            _ => String::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut msg = Level::Error.title(&self.message);
        let (file, span) = match (&self.file, &self.span) {
            (Some(f), Some(s)) => (f, clamp(s.clone(), &f.text)),
            (Some(f), None) => {
                let mut out = Renderer::plain().render(msg).to_string();
                out.push_str(&format!("\n  --> {}", f.display));
                if let Some(h) = &self.help {
                    out.push_str(&format!("\n  = help: {h}"));
                }
                return out;
            }
            _ => {
                if let Some(h) = &self.help {
                    msg = msg.footer(Level::Help.title(h));
                }
                return Renderer::plain().render(msg).to_string();
            }
        };
        let label = self.label.as_deref().unwrap_or("");
        msg = msg.snippet(
            Snippet::source(&file.text)
                .origin(&file.display)
                .line_start(1)
                .fold(true)
                .annotation(Level::Error.span(span).label(label)),
        );
        if let Some(h) = &self.help {
            msg = msg.footer(Level::Help.title(h));
        }
        Renderer::plain().render(msg).to_string()
    }
}

/// An empty span renders no caret; widen it to one character. A span at the
/// very end of the file (a parser error at EOF) lies past the last line and
/// would render as `file:1:1` with no source: blame the end of the last
/// non-blank line instead.
fn clamp(span: Range<usize>, text: &str) -> Range<usize> {
    if span.start >= text.len() {
        let content = text.trim_end();
        let at = if content.len() < text.len() {
            content.len()
        } else {
            content.char_indices().next_back().map_or(0, |(i, _)| i)
        };
        return at..text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
    }
    let start = span.start;
    let mut end = span.end.min(text.len()).max(start);
    if end == start {
        end = text[start..].chars().next().map(|c| start + c.len_utf8()).unwrap_or(start);
    }
    start..end
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, file: &SourceFile, span: Range<usize>, message: impl Into<String>) -> DiagBuilder<'_> {
        self.items.push(Diagnostic {
            file: Some(file.clone()),
            span: Some(span),
            message: message.into(),
            label: None,
            help: None,
        });
        DiagBuilder(self.items.last_mut().expect("just pushed"))
    }

    pub fn file_error(&mut self, file: &SourceFile, message: impl Into<String>) -> DiagBuilder<'_> {
        self.items.push(Diagnostic { file: Some(file.clone()), span: None, message: message.into(), label: None, help: None });
        DiagBuilder(self.items.last_mut().expect("just pushed"))
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            let ka = (a.file.as_ref().map(|f| f.display.clone()), a.span.as_ref().map(|s| s.start));
            let kb = (b.file.as_ref().map(|f| f.display.clone()), b.span.as_ref().map(|s| s.start));
            ka.cmp(&kb)
        });
        self.items
    }
}

/// Adds a label or help to the diagnostic just pushed.
pub struct DiagBuilder<'a>(&'a mut Diagnostic);

impl DiagBuilder<'_> {
    pub fn label(self, label: impl Into<String>) -> Self {
        self.0.label = Some(label.into());
        self
    }
    pub fn help(self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }
}

/// Edit distance for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "did you mean" help text, or the list of valid names.
pub fn suggest<'a>(name: &str, kind: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match closest(name, candidates.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => {
            let all: Vec<&str> = candidates.into_iter().collect();
            format!("known {kind}: {}", all.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let f = SourceFile { display: "x.toml".into(), text: "a = 1\nbé = 2\n".into() };
        let d = Diagnostic { file: Some(f), span: Some(10..11), message: "m".into(), label: None, help: None };
        assert_eq!(d.line_col(), Some((2, 4)));
        assert!(d.render().contains("x.toml:2:4"), "{}", d.render());
    }

    #[test]
    fn span_at_end_of_file_points_at_last_line() {
        let f = SourceFile { display: "x.toml".into(), text: "a = 1\nb = [2\n\n".into() };
        let d = Diagnostic { file: Some(f), span: Some(15..15), message: "m".into(), label: None, help: None };
        assert_eq!(d.line_col(), Some((2, 7)));
        assert!(d.render().contains("x.toml:2:7"), "{}", d.render());
    }

    #[test]
    fn closest_name() {
        assert_eq!(closest("qemu-x86-64-pc", ["qemu-x86_64-pc", "gem5-arm"]), Some("qemu-x86_64-pc"));
        assert_eq!(closest("zzz", ["qemu-x86_64-pc"]), None);
    }
}
