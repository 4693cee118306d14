//! The gem5 backend: a simulator built from source (no Debian package),
//! driven by a board's Python config script and argument templates. The
//! console is a file gem5 writes (`m5out/<terminal>`); gdb and terminal
//! ports are chosen by gem5 and announced on its output; the guest reads its
//! configuration with `m5 readfile`; ARM boards need a bootloader built from
//! the gem5 tree; checkpoints are gem5's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{cmdline, path, Backend, BootInputs, Explain, Features, Finder, GdbPort, Install, Prepare, Staged};
use crate::cache::Cache;
use crate::command::CommandSpec;
use crate::descriptor::{Board, Gem5, Registry};
use crate::error::{Error, Result};
use crate::host::Requirement;

/// Debian packages a gem5 build needs (`kmatrix emulator build gem5`).
pub const BUILD_DEPS: &str = "g++ scons m4 python3-dev zlib1g-dev libprotobuf-dev protobuf-compiler libgoogle-perftools-dev libboost-all-dev pkg-config";

/// How to get a gem5 for `isa`: the one hint every "gem5 not built"
/// message and skip reason gives.
pub fn hint(isa: &str) -> String {
    format!("run `kmatrix emulator build gem5 --isa {isa}` or pass --gem5 <binary>")
}

pub fn missing(isa: &str) -> Error {
    Error::EmulatorNotInstalled { emulator: "gem5".into(), hint: hint(isa) }
}

/// Where `kmatrix emulator build gem5` records the build for `isa`.
pub fn record_path(cache: &Cache, isa: &str) -> PathBuf {
    cache.root.join("emulators").join(format!("gem5-{isa}.json"))
}

/// The gem5 recorded for `isa`, if its binary still exists.
pub fn recorded(cache: &Cache, isa: &str) -> Option<Install> {
    let text = std::fs::read_to_string(record_path(cache, isa)).ok()?;
    let inst: Install = serde_json::from_str(&text).ok()?;
    inst.binary.is_file().then_some(inst)
}

/// An install from a `--gem5 <root>/build/<ISA>/gem5.<variant>` binary.
pub fn from_binary(bin: &Path) -> Option<Install> {
    let root = bin.parent()?.parent()?.parent()?.to_path_buf();
    Some(Install { binary: bin.to_path_buf(), root, version: None })
}

impl Backend for Gem5 {
    fn kind(&self) -> &'static str {
        "gem5"
    }

    fn machine(&self) -> String {
        format!("gem5 {} {}", self.isa, self.script.rsplit('/').next().unwrap_or(""))
    }

    fn facts(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([("isa", self.isa.clone()), ("variant", self.variant.clone()), ("script", self.script.clone())])
    }

    fn features(&self) -> Features {
        // Instruction counts would come from its stats (simInsts); not read yet.
        Features { checkpoints: true, shares: false, net: false, disks: false, snapshots: false, insn_count: false, kgdb: false }
    }

    fn locate(&self, built: &Finder) -> Result<Option<Install>> {
        built(&self.isa, &self.variant).map(Some).ok_or_else(|| missing(&self.isa))
    }

    fn build_hint(&self) -> Option<String> {
        Some(format!("`kmatrix emulator build gem5 --isa {} --source <gem5 tree>`; build deps: {BUILD_DEPS}", self.isa))
    }

    fn requirements(&self, _board: &Board) -> Vec<Requirement> {
        // Built from source, not installed: its boards skip until it is
        // there ([`Backend::unavailable`]); `doctor` says how to build it.
        Vec::new()
    }

    fn describe(&self, built: &Finder) -> (String, String) {
        let v = match built(&self.isa, &self.variant) {
            Some(i) => format!("{} ({})", i.version.clone().unwrap_or_else(|| "gem5".into()), i.binary.display()),
            None => format!("not built: {}", hint(&self.isa)),
        };
        (format!("gem5 {} ({})", self.isa, self.variant), v)
    }

    fn prepare(&self, p: &Prepare) -> Result<Staged> {
        let mut staged = Staged::new();
        // The configuration the init fetches with `m5 readfile` (always for
        // an embedded initramfs, and again after a checkpoint).
        let conf = p.run_dir.join("kmatrix.conf");
        crate::cache::write_atomic(&conf, p.init_conf.as_bytes())?;
        staged.insert("readfile".into(), conf);
        if let Some(inst) = p.install
            && let Some(bl) = bootloader(p.cache, p.reg, p.board, self, p.toolchain, inst)?
        {
            staged.insert("bootloader".into(), bl);
        }
        // A stale terminal file from an earlier boot would be read as this one's console.
        let _ = std::fs::remove_dir_all(p.run_dir.join("m5out"));
        Ok(staged)
    }

    fn command(&self, board: &Board, i: &BootInputs) -> CommandSpec {
        let g = self;
        let outdir = path(&i.run_dir.as_ref().map(|d| d.join("m5out")), "<outdir>");
        let (binary, root) = match &i.install {
            Some(inst) => (inst.binary.display().to_string(), inst.root.display().to_string()),
            None => (format!("<gem5>/build/{}/gem5.{}", g.isa, g.variant), "<gem5>".to_string()),
        };
        let mem = i.memory_mib.unwrap_or(board.memory_mib);
        let staged = |name: &str| path(&i.staged.get(name).cloned(), &format!("<{name}>"));
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("gem5-root", root.clone());
        vars.insert("outdir", outdir.clone());
        vars.insert("kernel", i.kernel.display().to_string());
        vars.insert("initrd", path(&i.initrd, "<initrd>"));
        vars.insert("dtb", path(&i.dtb, "<dtb>"));
        vars.insert("disk-image", staged("disk-image"));
        vars.insert("memory", format!("{mem}MiB"));
        vars.insert("cmdline", cmdline(board, i));
        vars.insert("gdb-port", i.gdb_port.map(|p| p.to_string()).unwrap_or_else(|| "0".into()));
        vars.insert("bootloader", staged("bootloader"));
        vars.insert("readfile", staged("readfile"));
        vars.insert("checkpoint-dir", path(&i.checkpoint.as_ref().map(|c| c.dir.clone()), "<checkpoint-dir>"));
        let fill = |s: &str| {
            let mut out = s.to_string();
            for (k, v) in &vars {
                // `{name:py}`: a Python string literal, for gem5's `--param`
                // statements (which gem5 exec()s). JSON string syntax is valid
                // Python for these values.
                out = out.replace(&format!("{{{k}:py}}"), &serde_json::to_string(v).unwrap_or_default());
                out = out.replace(&format!("{{{k}}}"), v);
            }
            out
        };
        let mut c = CommandSpec::new(binary).arg(format!("--outdir={outdir}"));
        // Listeners (terminal, gdb) only when someone will connect; gem5 binds
        // them to localhost unless --allow-remote-connections is given, which
        // kmatrix never passes. The console is read from m5out/<board terminal>.
        let listen = i.gdb_port.is_some() || i.interactive;
        c = c.arg(format!("--listener-mode={}", if listen { "on" } else { "off" }));
        c = c.arg(format!("{root}/{}", g.script));
        c = c.args(g.args.iter().map(|a| fill(a)));
        if i.halted {
            c = c.args(g.halted_args.iter().map(|a| fill(a)));
        }
        match &i.checkpoint {
            Some(cp) if cp.restore => c = c.args(g.restore_args.iter().map(|a| fill(a))),
            Some(_) => c = c.args(g.checkpoint_args.iter().map(|a| fill(a))),
            None => {}
        }
        for (k, v) in &g.env {
            c = c.env(k.clone(), fill(v));
        }
        c.args(i.extra_args.iter().cloned())
    }

    fn console_file(&self, run_dir: &Path) -> Option<PathBuf> {
        // gem5 writes the console (every byte, unbuffered) to <outdir>/<terminal>.
        Some(run_dir.join("m5out").join(&self.terminal))
    }

    fn gdb_port(&self) -> GdbPort {
        GdbPort::Announced(".remote_gdb".into())
    }

    fn silence_is_a_hang(&self) -> bool {
        // A gem5 guest can be quiet for minutes while the simulator works
        // through the boot: only its overall timeout applies.
        false
    }

    fn explainer(&self) -> Explain {
        explain
    }

    fn interactive(&self, cmd: &CommandSpec, run_dir: &Path, on_gdb_port: &mut dyn FnMut(u16)) -> Result<i32> {
        crate::boot::run_terminal(cmd, &self.terminal, &run_dir.join("gem5.log"), explain, &mut |name, port| {
            if name.ends_with(".remote_gdb") {
                on_gdb_port(port);
            }
        })
    }

    fn interactive_banner(&self, board: &Board, run_dir: &Path) -> String {
        format!("booting {} on gem5 (Ctrl-A x stops the simulation; gem5's own output: {})", board.id, run_dir.join("gem5.log").display())
    }
}

/// The ISAs `kmatrix emulator build gem5` builds: those whose boards the
/// guest init can end (m5ops for aarch64 and x86_64 only).
pub const BUILDABLE_ISAS: &[&str] = &["ARM", "X86"];

/// What to build or record.
pub enum From {
    /// A gem5 source tree: configure (once) and build with scons.
    Tree(PathBuf),
    /// An existing `<root>/build/<ISA>/gem5.<variant>`.
    Binary(PathBuf),
}

/// Builds gem5 for `isa` with scons (classic memory system, no Ruby: all an
/// AtomicSimpleCPU boot needs, and far fewer objects), or takes an existing
/// binary. Builds resume: scons picks up where an interrupted run stopped.
/// None for a dry run.
pub fn build(isa: &str, variant: &str, from: From, jobs: usize, dry_run: bool, say: &dyn Fn(&str)) -> Result<Option<Install>> {
    let (binary, root) = match from {
        From::Binary(bin) => {
            let bin = bin.canonicalize().map_err(Error::io(format!("cannot find {}", bin.display())))?;
            // <root>/build/<ISA>/gem5.<variant>
            let root = bin.ancestors().nth(3).map(PathBuf::from).ok_or_else(|| Error::Usage("expected <gem5>/build/<ISA>/gem5.<variant>".into()))?;
            (bin, root)
        }
        From::Tree(src) => {
            let root = src.canonicalize().map_err(Error::io(format!("cannot find {}", src.display())))?;
            if !root.join("SConstruct").is_file() {
                return Err(Error::Usage(format!("{} is not a gem5 source tree (no SConstruct)", root.display())));
            }
            let build_dir = format!("build/{isa}");
            let scons = |args: &[&str]| CommandSpec::new("scons").args(args.iter().copied()).cwd(root.clone());
            // Configured once (kconfig writes gem5.build/config); scons then resumes.
            if !root.join(&build_dir).join("gem5.build/config").exists() {
                run_step(say, &scons(&["defconfig", &build_dir, &format!("build_opts/{isa}")]), dry_run)?;
                // An AtomicSimpleCPU boot needs neither Ruby nor SystemC nor
                // KVM; leaving them out saves about a fifth of the objects.
                run_step(say, &scons(&["setconfig", &build_dir, "RUBY=n", "USE_SYSTEMC=n", "USE_KVM=n"]), dry_run)?;
            }
            let target = format!("{build_dir}/gem5.{variant}");
            run_step(say, &scons(&[&target, &format!("-j{jobs}"), "--ignore-style"]), dry_run)?;
            (root.join(&target), root)
        }
    };
    if dry_run {
        return Ok(None);
    }
    if !binary.is_file() {
        return Err(Error::Infra(format!("{} was not built", binary.display())));
    }
    Ok(Some(Install { version: version(&root), binary, root }))
}

/// gem5's version from src/base/version.cc (`gem5Version = "24.0.0.1";`).
fn version(root: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("src/base/version.cc")).ok()?;
    let line = text.lines().find(|l| l.contains("gem5Version"))?;
    Some(line.split('"').nth(1)?.to_string())
}

fn run_step(say: &dyn Fn(&str), c: &CommandSpec, dry: bool) -> Result<()> {
    say(&format!("{c}"));
    if dry {
        return Ok(());
    }
    // Its own group, so the watchdog stops scons and its compilers if
    // kmatrix is killed; SIGTERM first, so scons records what it built.
    let mut g = crate::process::Group::spawn_spec(c, Stdio::inherit(), Stdio::inherit(), Stdio::null(), crate::process::Mode::Group).map_err(|e| e.with_package("scons"))?;
    let st = g.wait_grace(std::time::Duration::from_secs(120))?;
    if st == 0 { Ok(()) } else { Err(Error::Infra(format!("`{c}` failed (exit {st})"))) }
}

/// The last line of gem5's output that explains a failure. gem5 24's
/// BaseRemoteGDB::addThreadContext selects its first thread inside an
/// assert(), which a gem5.fast build compiles out: the stub then has no
/// thread and gem5 segfaults in getRegs as soon as gdb attaches.
pub(crate) fn explain(text: &str) -> Option<String> {
    let why = text
        .lines()
        .rev()
        .find(|l| l.starts_with("fatal:") || l.starts_with("panic:") || l.starts_with("gem5 has encountered a segmentation fault"))
        .map(|l| l.trim().to_string())?;
    if why.starts_with("gem5 has encountered a segmentation fault") && text.contains("RemoteGDB") {
        return Some(format!(
            "{why} (in gem5's gdb stub: a gem5.fast build has no thread selected for gdb, as BaseRemoteGDB::addThreadContext \
             selects it inside an assert(); use gem5.opt: `kmatrix emulator build gem5 --isa <ISA>`)"
        ));
    }
    Some(why)
}

/// Builds the board's gem5 bootloader (e.g. boot.arm64) from the gem5 tree
/// with the board's toolchain, once per toolchain and source content.
fn bootloader(cache: &Cache, reg: &Registry, board: &Board, g: &Gem5, toolchain: &str, gem5: &Install) -> Result<Option<PathBuf>> {
    use sha2::{Digest, Sha256};
    let Some(bl) = &g.bootloader else { return Ok(None) };
    let t = reg.toolchain(toolchain)?.target(&board.arch)?;
    let src = gem5.root.join(&bl.source);
    let mut h = Sha256::new();
    for entry in std::fs::read_dir(&src).map_err(Error::io(format!("cannot read the gem5 bootloader source {}", src.display())))? {
        let p = entry.map_err(Error::io("read_dir"))?.path();
        if p.is_file() {
            h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
            h.update(std::fs::read(&p).map_err(Error::io(format!("cannot read {}", p.display())))?);
        }
    }
    let prefix = t.cross_compile.clone().unwrap_or_default();
    h.update(prefix.as_bytes());
    let hash = hex::encode(h.finalize());
    let dir = cache.dir("gem5-bootloaders")?.join(&hash[..16]);
    let out = dir.join(&bl.image);
    if out.is_file() {
        return Ok(Some(out));
    }
    let _lock = cache.lock(&format!("gem5-bootloaders/{}", &hash[..16]), &|_| {})?;
    if out.is_file() {
        return Ok(Some(out));
    }
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(Error::io(format!("cannot create {}", tmp.display())))?;
    let cmd = CommandSpec::new("make")
        .arg("-C")
        .arg(src.display().to_string())
        .arg(format!("BUILDDIR={}", tmp.display()))
        .arg(format!("CROSS_COMPILE={prefix}"))
        .arg(tmp.join(&bl.image).display().to_string());
    let res = crate::process::output_spec(&cmd)?;
    if !res.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Infra(format!("building the gem5 bootloader failed: {cmd}\n{}", String::from_utf8_lossy(&res.stderr))));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(Error::io(format!("cannot write {}", dir.display())))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fast_build_crashing_under_gdb_is_explained() {
        let log = "Listening for connections on port 7000\n\
                   gem5 has encountered a segmentation fault!\n\n--- BEGIN LIBC BACKTRACE ---\n\
                   gem5.fast(_ZN4gem56X86ISA9RemoteGDB16AMD64GdbRegCache7getRegsEPNS_13ThreadContextE+0xf)[0x1]\n";
        let r = super::explain(log).unwrap();
        assert!(r.contains("gem5.fast") && r.contains("gem5.opt"), "{r}");
        assert_eq!(super::explain("fatal: no kernel\n").as_deref(), Some("fatal: no kernel"));
        assert_eq!(super::explain("qemu-system-arm: x\n"), None);
    }
}
