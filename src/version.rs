//! Kernel and compiler versions, and the ranges descriptors give values for
//! (`kernel = ">=6.5"`).
//!
//! Versions are compared as semver after padding ("6.1" is 6.1.0); a
//! kernel's `-rc3` or Debian suffix is dropped, so an rc of 6.5 already
//! counts as 6.5. Ranges are semver requirements, but a bare version is
//! refused: semver would read "6.5" as "^6.5" (6.5 up to, not including,
//! 7.0), which is never what a kernel range means.

use std::fmt;

use serde::{Serialize, Serializer};

/// A release number: "6.1", "6.12.117", "14.0.6".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(semver::Version);

impl Version {
    /// The leading dotted number of `s` ("6.12.117-rc1+" → 6.12.117).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let nums: Vec<u64> = s[..end].split('.').filter(|p| !p.is_empty()).map(|p| p.parse().ok()).collect::<Option<_>>()?;
        if nums.is_empty() || nums.len() > 3 {
            return None;
        }
        let g = |i: usize| nums.get(i).copied().unwrap_or(0);
        Some(Version(semver::Version::new(g(0), g(1), g(2))))
    }

    /// The first version-looking word of a tool's `--version` line
    /// ("Debian clang version 14.0.6" → 14.0.6; "gcc (Debian 12.2.0-14) 12.2.0" → 12.2.0).
    pub fn from_tool_line(line: &str) -> Option<Version> {
        // gcc puts the package version in parentheses before its own.
        let outside: String = {
            let mut depth = 0;
            line.chars()
                .map(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    if depth > 0 || c == ')' { ' ' } else { c }
                })
                .collect()
        };
        outside.split_whitespace().filter(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit())).find_map(Version::parse)
    }

    /// Whether a declared version ("6.1") names this release (6.1.x).
    pub fn is_named_by(&self, declared: &str) -> bool {
        let parts: Vec<&str> = declared.trim().split('.').collect();
        let mine = [self.0.major, self.0.minor, self.0.patch];
        !parts.is_empty() && parts.len() <= 3 && parts.iter().zip(mine).all(|(p, m)| p.parse::<u64>().ok() == Some(m))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A version range as written in a descriptor: `>=6.5`, `>=6.1, <6.12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    text: String,
    req: semver::VersionReq,
}

impl Range {
    pub fn parse(s: &str) -> Result<Range, String> {
        let text = s.trim().to_string();
        if text.is_empty() {
            return Err("an empty range".into());
        }
        for part in text.split(',') {
            let p = part.trim();
            if !p.starts_with(['<', '>', '=']) {
                return Err(format!("`{p}` has no operator"));
            }
        }
        let req = semver::VersionReq::parse(&text).map_err(|e| e.to_string())?;
        Ok(Range { text, req })
    }

    pub fn contains(&self, v: &Version) -> bool {
        self.req.matches(&v.0)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Range {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A kernel tree's version from its top-level Makefile (VERSION,
/// PATCHLEVEL, SUBLEVEL): known before anything is configured.
pub fn of_tree(dir: &std::path::Path) -> Option<Version> {
    let text = std::fs::read_to_string(dir.join("Makefile")).ok()?;
    let get = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    Some(Version(semver::Version::new(get("VERSION")?, get("PATCHLEVEL")?, get("SUBLEVEL").unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse("6.1").unwrap().to_string(), "6.1.0");
        assert_eq!(Version::parse("6.12.117-rc1+").unwrap().to_string(), "6.12.117");
        assert!(Version::parse("x").is_none());
        assert!(Version::parse("6.12.117").unwrap() > Version::parse("6.5").unwrap());
        assert_eq!(Version::from_tool_line("Debian clang version 14.0.6").unwrap().to_string(), "14.0.6");
        assert_eq!(Version::from_tool_line("aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0").unwrap().to_string(), "12.2.0");
        assert!(Version::parse("6.1.192").unwrap().is_named_by("6.1"));
        assert!(!Version::parse("6.12.1").unwrap().is_named_by("6.1"));
    }

    #[test]
    fn ranges() {
        let r = Range::parse(">=6.5").unwrap();
        assert!(r.contains(&Version::parse("6.12.117").unwrap()));
        assert!(!r.contains(&Version::parse("6.1.192").unwrap()));
        let r = Range::parse(">=6.1, <6.12").unwrap();
        assert!(r.contains(&Version::parse("6.1").unwrap()));
        assert!(!r.contains(&Version::parse("6.12").unwrap()));
        assert!(Range::parse("6.5").unwrap_err().contains("no operator"));
        assert!(Range::parse(">=six").is_err());
    }
}
