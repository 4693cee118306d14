//! Handing a plan to the engines labs already run: each submodule holds
//! one engine whole (what it is given, how it is started, how its results
//! come back). The plan stays kmatrix's: every engine job runs `kmatrix run
//! --plan` on a part of it, and `kmatrix merge` joins what they wrote.
//!
//! - [`slurm`]: a build job array, a boot array after it, a merge job.
//! - [`lava`]: one LAVA job per QEMU cell, run by `lava-run` or a lab.
//! - [`k8s`]: an Indexed Job, one completion index per shard.
//! - [`gha`]: a GitHub Actions workflow, shards in matrices of <= 256.

pub mod gha;
pub mod k8s;
pub mod lava;
pub mod slurm;

use serde_json::Value;

/// `s` quoted for a POSIX shell (single quotes; `'` as `'\''`).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One command line for a script, every word quoted.
pub fn sh_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|a| sh_quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

fn plain(s: &str) -> bool {
    const SPECIAL: &[&str] = &["true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"];
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || "/_.$".contains(c));
    first_ok
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || " _./-=$(){}*+,@:".contains(c))
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).expect("a string serialises"),
        other => other.to_string(),
    }
}

fn block_ok(s: &str) -> bool {
    s.contains('\n') && !s.contains('\t') && !s.contains('\r') && s.lines().all(|l| !l.starts_with(' ') && !l.ends_with(' '))
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                out.push_str(&format!("{pad}{}:", scalar(&Value::String(k.clone()))));
                value_after_key(val, indent, out);
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inner[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        emit(item, indent + 2, out);
                    }
                    _ => {
                        out.push_str(&format!("{pad}-"));
                        value_after_key(item, indent, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn value_after_key(val: &Value, indent: usize, out: &mut String) {
    match val {
        Value::Object(m) if m.is_empty() => out.push_str(" {}\n"),
        Value::Array(a) if a.is_empty() => out.push_str(" []\n"),
        Value::Object(_) | Value::Array(_) => {
            out.push('\n');
            emit(val, indent + 2, out);
        }
        Value::String(s) if block_ok(s) => {
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for l in s.lines() {
                if l.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&format!("{}{l}\n", " ".repeat(indent + 2)));
                }
            }
        }
        other => out.push_str(&format!(" {}\n", scalar(other))),
    }
}

/// `v` as block-style YAML (what LAVA, Kubernetes and GitHub read; strings
/// that could read as something else are double-quoted, scripts are
/// literal blocks).
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn yaml_quotes_what_would_read_as_something_else() {
        let v = json!({
            "a": "plain text",
            "b": "yes",
            "c": "12",
            "d": "x: y",
            "e": [1, "two", {"f": true, "g": ["h"]}],
            "i": {},
            "j": "line 1\nline 2\n",
            "k": "-m 512",
        });
        let y = super::yaml(&v);
        assert_eq!(
            y,
            "a: plain text\nb: \"yes\"\nc: \"12\"\nd: \"x: y\"\ne:\n  - 1\n  - two\n  - f: true\n    g:\n      - h\ni: {}\nj: |\n  line 1\n  line 2\nk: \"-m 512\"\n"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(super::sh_quote("/a/b-c.json"), "/a/b-c.json");
        assert_eq!(super::sh_quote("it's"), r"'it'\''s'");
        assert_eq!(super::sh_quote(""), "''");
        assert_eq!(super::sh_quote("$HOME"), "'$HOME'");
    }
}
