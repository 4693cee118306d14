//! A small QMP client over QEMU's unix socket (never TCP): capabilities
//! negotiation, commands, and HMP commands whose errors QEMU returns inside
//! *successful* replies (`savevm` says "Error: ..." with `"return"`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (waiting up to `wait` for QEMU to create the socket) and
    /// leaves capabilities negotiation mode.
    pub fn connect(path: &Path, wait: Duration) -> Result<Qmp, String> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > wait => return Err(format!("cannot connect to QMP at {}: {e}", path.display())),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        // QEMU made it srwx------ (its umask); the socket is read and
        // written, never executed.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        // savevm of a 512 MiB guest takes seconds; a stuck QEMU must not hang kmatrix.
        stream.set_read_timeout(Some(Duration::from_secs(300))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| format!("QMP read: {e}"))? == 0 {
            return Err("QMP closed the connection".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))
    }

    /// Runs a command; events that arrive before its reply are skipped.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = json!({ "execute": cmd, "arguments": args });
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("{cmd}: {}", e.get("desc").and_then(Value::as_str).unwrap_or("error")));
            }
        }
    }

    /// An HMP command line through QMP; its output is an error when it
    /// says so, although QMP reports success.
    pub fn hmp(&mut self, line: &str) -> Result<String, String> {
        let out = self.execute("human-monitor-command", json!({ "command-line": line }))?;
        let text = out.as_str().unwrap_or_default().to_string();
        if text.lines().any(|l| l.starts_with("Error") || l.contains("Error:")) {
            return Err(format!("`{line}`: {}", text.trim()));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, accepts capabilities, answers savevm with an
    /// HMP error inside a successful reply.
    #[test]
    fn hmp_errors_inside_successful_replies_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("savevm s1"), "{line}");
            writeln!(w, r#"{{"event": "STOP", "timestamp": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": "Error: no block device can store vmstate for snapshot\r\n"}}"#).unwrap();
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        let e = q.hmp("savevm s1").unwrap_err();
        assert!(e.contains("no block device can store vmstate"), "{e}");
        t.join().unwrap();
    }
}
