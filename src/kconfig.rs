//! Kernel config fragments: parsing `CONFIG_X=v` / `# CONFIG_X is not set`
//! lines, and checking that what was requested landed in the final `.config`.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

/// One requested symbol. `value == None` means "is not set".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub symbol: String,
    pub value: Option<String>,
}

impl Entry {
    pub fn line(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={}", self.symbol, v),
            None => format!("# {} is not set", self.symbol),
        }
    }
}

/// A named fragment: where it came from and its entries in order.
#[derive(Debug, Clone, Serialize)]
pub struct Fragment {
    pub name: String,
    pub origin: String,
    pub entries: Vec<Entry>,
}

impl Fragment {
    /// The fragment as a file `merge_config.sh` can read.
    pub fn to_file_text(&self) -> String {
        let mut s = format!("# {} (from {})\n", self.name, self.origin);
        for e in &self.entries {
            s.push_str(&e.line());
            s.push('\n');
        }
        s
    }
}

/// A syntax error at a byte range of the parsed text.
#[derive(Debug, Clone)]
pub struct LineError {
    pub span: Range<usize>,
    pub message: String,
}

/// Parses fragment text; byte offsets in errors are relative to `text`.
pub fn parse(text: &str) -> Result<Vec<Entry>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\n', '\r']);
        let start = offset + (line.len() - line.trim_start().len());
        offset += raw.len();
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(rest) = t.strip_prefix('#') {
            let rest = rest.trim();
            if let Some(sym) = rest.strip_suffix(" is not set") {
                if valid_symbol(sym) {
                    entries.push(Entry { symbol: sym.to_string(), value: None });
                } else {
                    errors.push(LineError { span: start..start + t.len(), message: format!("invalid config symbol `{sym}`") });
                }
            }
            continue; // a plain comment
        }
        match t.split_once('=') {
            Some((sym, val)) if valid_symbol(sym) && valid_value(val) => {
                // `=n` is the same request as "is not set".
                let value = if val == "n" { None } else { Some(val.to_string()) };
                entries.push(Entry { symbol: sym.to_string(), value });
            }
            Some((sym, _)) if !valid_symbol(sym) => errors.push(LineError {
                span: start..start + sym.len(),
                message: format!("invalid config symbol `{sym}`: expected CONFIG_ followed by A-Z, 0-9 or _"),
            }),
            Some((sym, val)) => errors.push(LineError {
                span: start + sym.len() + 1..start + t.len(),
                message: format!("invalid value `{val}` for {sym}: expected y, m, n, a number or a \"string\""),
            }),
            None => errors.push(LineError {
                span: start..start + t.len(),
                message: format!("not a config line: `{t}` (expected `CONFIG_X=value` or `# CONFIG_X is not set`)"),
            }),
        }
    }
    if errors.is_empty() { Ok(entries) } else { Err(errors) }
}

fn valid_symbol(s: &str) -> bool {
    s.strip_prefix("CONFIG_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
}

fn valid_value(v: &str) -> bool {
    matches!(v, "y" | "m" | "n")
        || (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
        || v.parse::<i64>().is_ok()
        || v.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The final `.config` as symbol → value (unset symbols are absent).
pub fn parse_dotconfig(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A requested symbol that olddefconfig changed or dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Mismatch {
    pub symbol: String,
    pub requested: String,
    pub actual: String,
    /// The fragment that asked for it.
    pub from: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: requested {}, got {} (from {})", self.symbol, self.requested, self.actual, self.from)
    }
}

/// Compares every requested entry with the final config. The last fragment
/// to mention a symbol wins, as in merge_config.sh.
pub fn check(requested: &[Fragment], final_config: &BTreeMap<String, String>) -> Vec<Mismatch> {
    let mut wanted: BTreeMap<&str, (&Entry, &str)> = BTreeMap::new();
    for frag in requested {
        for e in &frag.entries {
            wanted.insert(&e.symbol, (e, &frag.name));
        }
    }
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "is not set".into());
    wanted
        .into_iter()
        .filter_map(|(sym, (e, from))| {
            let actual = final_config.get(sym);
            let ok = match (&e.value, actual) {
                (None, None) => true,
                (None, Some(a)) => a == "n",
                (Some(v), Some(a)) => v == a,
                (Some(_), None) => false,
            };
            (!ok).then(|| Mismatch { symbol: sym.to_string(), requested: show(e.value.as_ref()), actual: show(actual), from: from.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_comments() {
        let e = parse("# hi\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=0x10\nCONFIG_E=n\n").unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(e[1], Entry { symbol: "CONFIG_B".into(), value: None });
        assert_eq!(e[4].value, None);
    }

    #[test]
    fn reports_bad_lines_with_offsets() {
        let text = "CONFIG_A=y\n  SERIAL=y\nCONFIG_B=maybe\n";
        let errs = parse(text).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(&text[errs[0].span.clone()], "SERIAL");
        assert_eq!(&text[errs[1].span.clone()], "maybe");
    }

    #[test]
    fn detects_dropped_and_changed_symbols() {
        let frag = Fragment { name: "board".into(), origin: "x".into(), entries: parse("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n").unwrap() };
        let fin = parse_dotconfig("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n");
        let m = check(&[frag], &fin);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].to_string(), "CONFIG_B: requested y, got is not set (from board)");
        assert_eq!(m[1].actual, "m");
    }
}
