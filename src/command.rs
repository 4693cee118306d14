//! A command to run, as data: program, argv and environment. Builders
//! (recipes, emulators, gdb) return these; runners spawn them; `kmatrix show`
//! prints them. Arguments are never joined into a shell string to be run.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Variables set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The child's umask, for programs that create sockets and files only
    /// kmatrix's user may open (QEMU's QMP socket, its console files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
}

impl CommandSpec {
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec { program: program.into(), args: Vec::new(), env: Vec::new(), cwd: None, umask: None }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    pub fn to_command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and changes only the child.
            unsafe {
                c.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        c
    }
}

/// Quotes a word for display (copy-pasteable into sh); never used to run.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.cwd {
            write!(f, "cd {} && ", shell_quote(&d.display().to_string()))?;
        }
        for (k, v) in &self.env {
            write!(f, "{}={} ", k, shell_quote(v))?;
        }
        write!(f, "{}", shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_reaches_the_child() {
        let out = CommandSpec::new("sh").args(["-c", "umask"]).umask(0o077).to_command().output().expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0077");
    }

    #[test]
    fn display_quotes_only_when_needed() {
        let c = CommandSpec::new("qemu").arg("-append").arg("console=ttyS0 panic=-1").arg("it's");
        assert_eq!(c.to_string(), r"qemu -append 'console=ttyS0 panic=-1' 'it'\''s'");
    }
}
