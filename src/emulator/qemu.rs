//! The QEMU backend: `qemu-system-*` from Debian, the console on its
//! stdout, a gdbstub on a loopback port kmatrix chooses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{cmdline, path, Backend, BootInputs, Explain, Features, Finder, GdbPort, Install, Prepare, Staged};
use crate::command::CommandSpec;
use crate::descriptor::{Board, Qemu};
use crate::error::Result;
use crate::host::{Check, Requirement};

impl Backend for Qemu {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn machine(&self) -> String {
        format!("{} -M {}", self.binary, self.machine)
    }

    fn facts(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([("binary", self.binary.clone()), ("machine", self.machine.clone())])
    }

    fn features(&self) -> Features {
        // Snapshots (over QMP) are QEMU's counterpart of gem5's checkpoints;
        // a diskless guest's state goes to a scratch qcow2 and its
        // configuration comes from a conf disk, so they need [qemu.disk].
        Features { checkpoints: false, shares: self.share.is_some(), net: self.net.is_some(), disks: self.disk.is_some(), snapshots: self.disk.is_some(), insn_count: true, kgdb: self.kgdb.is_some() }
    }

    fn locate(&self, _built: &Finder) -> Result<Option<Install>> {
        // A Debian package: a missing binary is reported, with its package,
        // when it is spawned and by pre-flight.
        Ok(None)
    }

    fn build_hint(&self) -> Option<String> {
        None
    }

    fn requirements(&self, board: &Board) -> Vec<Requirement> {
        let pkg = board.host_packages.first().cloned().unwrap_or_else(|| self.binary.clone());
        vec![Requirement { what: self.binary.clone(), check: Check::Program(self.binary.clone()), package: pkg, needed_by: board.id.clone() }]
    }

    fn describe(&self, _built: &Finder) -> (String, String) {
        let v = crate::host::which(&self.binary)
            .map(|p| crate::build::tool_version(&p, &["--version".to_string()]))
            .unwrap_or_else(|| "not installed".into());
        (self.binary.clone(), v)
    }

    fn prepare(&self, _p: &Prepare) -> Result<Staged> {
        Ok(Staged::new())
    }

    fn command(&self, board: &Board, i: &BootInputs) -> CommandSpec {
        let q = self;
        let mut c = CommandSpec::new(&q.binary).args(["-M", &q.machine]);
        if let Some(cpu) = &q.cpu {
            c = c.args(["-cpu", cpu]);
        }
        let mem = i.memory_mib.unwrap_or(board.memory_mib);
        c = c.args(["-m".to_string(), format!("{mem}M")]);
        let smp = i.smp.unwrap_or(q.smp);
        if smp != 1 {
            c = c.args(["-smp".to_string(), smp.to_string()]);
        }
        // -nodefaults: no NIC, no VGA, no default monitor. -no-reboot: a guest
        // reboot (panic=-1 after a panic, or the board's reboot-based exit)
        // ends QEMU instead of looping; verdicts come from the console, never
        // from QEMU's exit status.
        c = c.args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"]);
        // Interactive: QEMU's monitor muxed in, so Ctrl-A x quits.
        c = c.args(["-serial", if i.interactive { "mon:stdio" } else { "stdio" }]);
        c = c.args(["-kernel".to_string(), i.kernel.display().to_string()]);
        if board.kernel.dtb.is_some() || i.dtb.is_some() {
            c = c.args(["-dtb".to_string(), path(&i.dtb, "<dtb>")]);
        }
        if let Some(initrd) = &i.initrd {
            c = c.args(["-initrd".to_string(), initrd.display().to_string()]);
        }
        c = c.args(["-append".to_string(), cmdline(board, i)]);
        if let Some(port) = i.gdb_port {
            // Loopback only: a gdbstub gives full control of the guest.
            c = c.args(["-gdb".to_string(), format!("tcp:127.0.0.1:{port}")]);
        }
        if i.halted {
            c = c.arg("-S");
        }
        c = c.args(lab_args(q, i));
        if let (Some(k), Some(port)) = (&q.kgdb, i.kgdb_port) {
            // A socket server on loopback only: whoever connects controls the kernel.
            c = c.args(fill(&k.args, &[("port", port.to_string())]));
        }
        if let (Some(qmp), Ok(args)) = (&i.dump_qmp, self.dump_args()) {
            // The monitor that pauses and dumps the panicked guest: a unix
            // socket only (see the snapshot monitor below), unless the
            // snapshot monitor is there already.
            if i.snapshot.is_none() {
                c = c.umask(0o077);
                c = c.args(["-qmp".to_string(), format!("unix:{},server=on,wait=off", opt(&qmp.display().to_string()))]);
            }
            c = c.args(args);
        }
        if let Some(s) = &i.snapshot {
            // The monitor on a unix socket only, never TCP, and only for
            // this user: umask 077 makes QEMU create it srwx------ (a
            // socket's x bit means nothing; 0177 would also strip x from
            // directories a guest makes in a 9p share).
            c = c.umask(0o077);
            c = c.args(["-qmp".to_string(), format!("unix:{},server=on,wait=off", opt(&s.qmp.display().to_string()))]);
            // No guest device: only a place for savevm to put the state.
            c = c.args(["-drive".to_string(), format!("if=none,id=kmxvmstate,file={},format=qcow2", opt(&s.store.display().to_string()))]);
            if let Some(name) = &s.load {
                c = c.args(["-loadvm", name]);
            }
        }
        if let Some(n) = &i.insns {
            // QEMU prints plugin output only with `-d plugin`, into -D's file.
            let mut plugin = format!("file={}", opt(&n.plugin.display().to_string()));
            if let Some(m) = &n.marker {
                plugin.push_str(&format!(",marker={:#x}", m.address));
                if !m.bytes.is_empty() {
                    plugin.push_str(&format!(",bytes={}", hex::encode(&m.bytes)));
                }
            }
            c = c.args(["-plugin".to_string(), plugin, "-d".into(), "plugin".into(), "-D".into(), n.log.display().to_string()]);
        }
        c.args(q.extra_args.iter().cloned()).args(i.extra_args.iter().cloned())
    }

    fn console_file(&self, _run_dir: &Path) -> Option<PathBuf> {
        None
    }

    fn gdb_port(&self) -> GdbPort {
        GdbPort::Chosen
    }

    fn kgdb_tty(&self) -> Option<String> {
        self.kgdb.as_ref().map(|k| k.tty.clone())
    }

    fn dump_args(&self) -> std::result::Result<Vec<String>, String> {
        match &self.dump {
            Some(d) => d.clone(),
            None => Err("its descriptor has no [qemu.dump]".into()),
        }
    }

    fn silence_is_a_hang(&self) -> bool {
        true
    }

    fn explainer(&self) -> Explain {
        explain
    }

    fn interactive(&self, cmd: &CommandSpec, _run_dir: &Path, _on_gdb_port: &mut dyn FnMut(u16)) -> Result<i32> {
        crate::boot::run_interactive(cmd)
    }

    fn interactive_banner(&self, board: &Board, _run_dir: &Path) -> String {
        format!("booting {} (Ctrl-A x quits QEMU)", board.id)
    }
}

/// A value inside a QEMU `key=value,...` option: commas are doubled.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

fn fill(template: &[String], vars: &[(&str, String)]) -> Vec<String> {
    template
        .iter()
        .map(|a| {
            let mut out = a.clone();
            for (k, v) in vars {
                out = out.replace(&format!("{{{k}}}"), v);
            }
            out
        })
        .collect()
}

/// The board's lab device templates filled in for this boot's shares,
/// network and disks. A boot asks only for what the backend's features
/// say the board has (checked before the command is made).
fn lab_args(q: &Qemu, i: &BootInputs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &q.share {
        for (n, s) in i.shares.iter().enumerate() {
            out.extend(fill(t, &[("id", format!("kmxfs{n}")), ("path", opt(&s.path.display().to_string())), ("tag", opt(&s.tag))]));
        }
    }
    if let (Some(t), Some(net)) = (&q.net, &i.net) {
        // Forwarded ports listen on the host's loopback only.
        let hostfwd: String = net.forwards.iter().map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}")).collect();
        out.extend(fill(t, &[("hostfwd", hostfwd)]));
    }
    if let Some(t) = &q.disk {
        // Created so that the first disk is the guest's /dev/vda.
        let mut disks: Vec<(usize, &super::Disk)> = i.disks.iter().enumerate().collect();
        if q.disk_reversed {
            disks.reverse();
        }
        for (n, d) in disks {
            let readonly = if d.readonly { ",readonly=on".to_string() } else { String::new() };
            out.extend(fill(t, &[("id", format!("kmxdisk{n}")), ("file", opt(&d.file.display().to_string())), ("format", d.format.clone()), ("readonly", readonly)]));
        }
    }
    out
}

/// QEMU's own errors start with its program name
/// (`qemu-system-x86_64: -kernel x: No such file or directory`).
pub(crate) fn explain(text: &str) -> Option<String> {
    text.lines().rev().find(|l| l.contains("qemu-system-")).map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn explains_qemu_errors_only() {
        assert_eq!(super::explain("x\nqemu-system-arm: -dtb y: No such file\nz\n").as_deref(), Some("qemu-system-arm: -dtb y: No such file"));
        assert_eq!(super::explain("fatal: not qemu\n"), None);
    }
}
