//! One machine end to end: pick the board, build its kernel, assemble the
//! initramfs, and produce the emulator command. Shared by `kmatrix build`,
//! `kmatrix boot` and (later) the sweep runner.

use std::path::PathBuf;

use crate::build::{self, BuildOutcome, Request};
use crate::cache::Cache;
use crate::descriptor::{Board, ConfigSpec, Registry, SourceSpec};
use crate::error::{Error, Result};
use crate::kconfig::{self, Fragment};
use crate::recipe;
use crate::source;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub toolchain: String,
    /// A config of matrix.toml.
    pub config: Option<String>,
    /// A profile (fragment id + the arch's additions), e.g. `debug`.
    pub profile: Option<String>,
    pub source: Option<SourceSpec>,
    /// `--kernel`: a matrix kernel id or a linux-source version.
    pub kernel: Option<String>,
    /// User fragment files, merged last.
    pub fragments: Vec<PathBuf>,
    pub allow_config_mismatch: bool,
    pub jobs: usize,
    /// What the caller does with the kernel: pre-flight checks its tools.
    pub work: crate::preflight::Work,
}

/// The source a build uses: `--source`/`--source-url`, else `--kernel`
/// (a kernel of matrix.toml, or a Debian linux-source version), else the
/// matrix's first kernel (so `boot` and `debug` build what the nightly
/// builds first), else the newest /usr/src tarball.
pub fn source_spec(reg: &Registry, o: &BuildOptions) -> SourceSpec {
    if let Some(s) = &o.source {
        return s.clone();
    }
    let kernels = reg.matrix.as_ref().map(|m| m.kernels.as_slice()).unwrap_or_default();
    match &o.kernel {
        Some(k) => match kernels.iter().find(|x| &x.id == k) {
            Some(spec) => spec.source.clone(),
            None => SourceSpec::System { version: Some(k.clone()) },
        },
        None => kernels.first().map(|k| k.source.clone()).unwrap_or(SourceSpec::System { version: None }),
    }
}

/// Builds `board`'s kernel. The registry is first specialised to the
/// tree's version (`[[kernel.when]]`), and a board, toolchain or compiler
/// that cannot take this kernel is refused with the reason.
pub fn build(cache: &Cache, reg: &Registry, board: &Board, o: &BuildOptions, say: &dyn Fn(&str)) -> Result<BuildOutcome> {
    let tc = reg.toolchain(&o.toolchain)?;
    // Before anything is unpacked or configured.
    crate::preflight::require(reg, board, tc, o.work)?;
    let src = source::resolve(&source_spec(reg, o), cache, say)?;
    let reg = &reg.for_kernel(src.version.as_ref());
    let board = &reg.boards[&board.id];
    let arch = &reg.arches[&board.arch];
    let compiler = tc.target(&arch.id).ok().and_then(|t| crate::host::which(&t.cc)).map(|cc| build::tool_version(&cc, &tc.version_args));
    if let Some(why) = reg.incompatibility(board, tc, src.version.as_ref(), compiler.as_deref().and_then(crate::version::Version::from_tool_line).as_ref()) {
        return Err(Error::Usage(format!("{} cannot be built here: {why}", src.label)));
    }
    let mut spec: Option<ConfigSpec> = match &o.config {
        None => None,
        Some(id) => Some(
            reg.matrix
                .as_ref()
                .and_then(|m| m.all_configs.iter().find(|c| &c.id == id))
                .cloned()
                .ok_or_else(|| Error::Usage(format!("unknown config `{id}` (configs come from matrix.toml)")))?,
        ),
    };
    if let Some(p) = &o.profile {
        if !reg.fragments.contains_key(p) {
            return Err(Error::Usage(format!("unknown profile `{p}`: no fragments/{p}.config")));
        }
        let s = spec.get_or_insert_with(|| ConfigSpec {
            id: "cli".into(),
            description: String::new(),
            base: None,
            fragments: vec![],
            profile: None,
            config: None,
            allow_missing: vec![],
        });
        s.profile = Some(p.clone());
    }
    let mut inputs = recipe::config_inputs(reg, arch, board, spec.as_ref());
    for f in &o.fragments {
        let text = std::fs::read_to_string(f).map_err(Error::io(format!("cannot read fragment {}", f.display())))?;
        let entries = kconfig::parse(&text).map_err(|errs| {
            let e = &errs[0];
            let line = text[..e.span.start].matches('\n').count() + 1;
            Error::Usage(format!("{}:{line}: {}", f.display(), e.message))
        })?;
        inputs.fragments.push(Fragment { name: f.file_stem().and_then(|s| s.to_str()).unwrap_or("user").to_string(), origin: f.display().to_string(), entries });
    }
    let jobs = jobserver::Client::new(o.jobs.max(1)).map_err(Error::io("cannot create the make jobserver"))?;
    let req = Request { arch, board, toolchain: tc, inputs, source: &src, allow_config_mismatch: o.allow_config_mismatch, extra_targets: vec![] };
    let mut outcome = build::build(cache, &req, &jobs, say)?;
    if let BuildOutcome::Built { manifest, .. } = &mut outcome {
        // A reused build may have been made for another board of the arch:
        // boot what this board (at this kernel version) wants.
        manifest.image = manifest.dir.join(&board.kernel.image);
        manifest.dtb = board.kernel.dtb.as_ref().map(|d| manifest.dir.join(d));
    }
    Ok(outcome)
}

/// For a board whose kernel carries its initramfs (gem5 x86 has no initrd):
/// writes the archive into the cache, content-addressed, and points
/// CONFIG_INITRAMFS_SOURCE at it, so the build key follows its content. The
/// archive is the same for every boot: its init fetches each boot's nonce and
/// commands from the host with gem5's `m5 readfile`.
pub fn embed_initramfs(cache: &Cache, arch: &crate::descriptor::Arch, tc: &crate::descriptor::Toolchain, board: &Board, inputs: &mut recipe::ConfigInputs) -> Result<()> {
    use crate::rootfs::{busybox, image, init};
    use sha2::{Digest, Sha256};
    if board.kernel.initramfs != crate::descriptor::InitramfsMode::Embedded {
        return Ok(());
    }
    // busybox goes in too: without a shell no `--cmd` could run, and the
    // image cannot change per boot.
    let spec = image::Spec {
        init: init::build(cache, arch, tc)?,
        busybox: Some(busybox::locate(cache, arch, None)?),
        conf: image::InitConf { nonce: "embedded".into(), poweroff: board.poweroff, cmds: vec![], shell: false, readfile: true, checkpoint: false, shares: vec![], net: None, snapshot: false, generation: 0 },
        modules: vec![],
    };
    let data = image::archive(&spec)?;
    let hash = hex::encode(Sha256::digest(&data));
    let path = cache.dir("initramfs")?.join(format!("{}.cpio", &hash[..16]));
    let _lock = cache.lock(&format!("initramfs/{}", &hash[..16]), &|_| {})?;
    if !path.is_file() {
        crate::cache::write_atomic(&path, &data)?;
    }
    // A path with a quote or backslash would not survive Kconfig's quoting.
    let p = path.display().to_string();
    if p.contains(['"', '\\', '\n']) {
        return Err(Error::Usage(format!("the cache path {p} cannot go into CONFIG_INITRAMFS_SOURCE")));
    }
    let text = format!("CONFIG_BLK_DEV_INITRD=y\nCONFIG_INITRAMFS_SOURCE=\"{p}\"\n");
    let entries = kconfig::parse(&text).map_err(|_| Error::Infra(format!("bad initramfs fragment: {text}")))?;
    inputs.fragments.push(Fragment { name: "embedded-initramfs".into(), origin: path.display().to_string(), entries });
    Ok(())
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// How to boot a built kernel.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    pub cmds: Vec<String>,
    pub append: Vec<String>,
    pub init: Option<PathBuf>,
    pub busybox: Option<PathBuf>,
    pub memory_mib: Option<u64>,
    pub smp: Option<u32>,
    pub emu_args: Vec<String>,
    pub interactive: bool,
    /// The emulator's installation, when it is built from source ([`crate::emulator::Backend::locate`]).
    pub install: Option<crate::emulator::Install>,
    pub modules: Vec<PathBuf>,
    /// gdbstub on 127.0.0.1:port.
    pub gdb_port: Option<u16>,
    /// CPU stopped at reset until the debugger continues.
    pub halted: bool,
    /// KGDB's serial line on 127.0.0.1:port.
    pub kgdb_port: Option<u16>,
    /// Take a checkpoint after the boot marker, into this directory
    /// (backends with `features().checkpoints`).
    pub checkpoint: Option<PathBuf>,
    /// Restore the checkpoint in this directory.
    pub restore: Option<PathBuf>,
    /// The lab devices, disk root and snapshots.
    pub lab: Lab,
    /// Count guest instructions to the marker and to the end.
    pub count_insns: bool,
    /// `--dump`: on a panic the guest waits (panic=0) to be dumped over QMP.
    pub dump: bool,
}

/// What a boot asks of the lab (`--share`, `--net`, `--disk`, `--rootfs`,
/// `--snapshot-*`).
#[derive(Debug, Clone, Default)]
pub struct Lab {
    /// Host directories shared into the guest, mounted at `/mnt/<tag>`.
    pub shares: Vec<crate::emulator::Share>,
    pub net: Option<crate::emulator::Net>,
    pub disks: Vec<crate::emulator::Disk>,
    /// Boot this ext4 image as the root (`/dev/vda`) instead of an initramfs.
    pub rootfs: Option<PathBuf>,
    /// The root is a whole OS (`--rootfs debian`): its own init (systemd),
    /// a cloud-init seed, ssh on a forwarded port.
    pub distro: Option<Distro>,
    /// Save the machine under this name after the commands (QEMU snapshots).
    pub snapshot_save: Option<String>,
    /// Start from the snapshot of this name; the guest then runs this boot's commands.
    pub snapshot_load: Option<String>,
}

/// A whole-OS root's boot settings.
#[derive(Debug, Clone, Default)]
pub struct Distro {
    pub hostname: Option<String>,
}

/// A boot ready to run: the emulator argv and the marker nonce.
pub struct PreparedBoot {
    pub command: crate::command::CommandSpec,
    pub nonce: String,
    pub run_dir: PathBuf,
    /// Where the guest console appears when it is not the emulator's stdout.
    pub console_file: Option<PathBuf>,
    /// Picks the emulator's own error line.
    pub explain: crate::emulator::Explain,
    /// Saves the machine when the init waits for it (`--snapshot-save`).
    pub at_snapshot: Option<crate::boot::SnapshotHook>,
    /// Where the instruction counts appear (`count_insns`).
    pub insns_log: Option<PathBuf>,
    /// A whole-OS boot: how to reach its sshd (also in `<run>/ssh.json`).
    pub ssh: Option<crate::boot::distro::Ssh>,
    /// `--dump`: the QMP socket that pauses and dumps a panicked guest.
    pub dump_qmp: Option<PathBuf>,
}

/// Writes the initramfs for this boot into `run_dir` and renders the
/// emulator command.
#[allow(clippy::too_many_arguments)]
pub fn prepare_boot(
    cache: &Cache,
    reg: &Registry,
    board: &Board,
    toolchain: &str,
    manifest: &build::Manifest,
    o: &BootOptions,
    run_dir: &std::path::Path,
    say: &dyn Fn(&str),
) -> Result<PreparedBoot> {
    use crate::rootfs::{busybox, image, init};
    let arch = &reg.arches[&board.arch];
    let tc = reg.toolchain(toolchain)?;
    // An embedded initramfs (init, busybox) was fixed when the kernel was
    // built; nothing of it can change per boot.
    let embedded = board.kernel.initramfs == crate::descriptor::InitramfsMode::Embedded;
    if embedded && (!o.modules.is_empty() || o.busybox.is_some() || o.init.is_some()) {
        return Err(Error::Usage(format!(
            "board `{}` links its initramfs (kmatrix's init and busybox) into the kernel: --module, --busybox and --init cannot change it per boot",
            board.id
        )));
    }
    let bb = if !embedded && o.lab.rootfs.is_none() && (o.interactive || !o.cmds.is_empty()) {
        match busybox::locate(cache, arch, o.busybox.as_deref()) {
            Ok(p) => Some(p),
            Err(e) if !o.interactive => {
                say(&format!("no busybox ({e}); commands run without a shell"));
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let nonce = crate::boot::nonce();
    let backend = crate::emulator::of(board);
    let conf = image::InitConf {
        nonce: nonce.clone(),
        poweroff: board.poweroff,
        cmds: o.cmds.clone(),
        shell: false,
        readfile: false,
        checkpoint: o.checkpoint.is_some(),
        shares: o.lab.shares.iter().map(|s| (s.tag.clone(), format!("/mnt/{}", s.tag))).collect(),
        // QEMU's user-mode network hands out 10.0.2.15; the host is 10.0.2.2.
        net: o.lab.net.as_ref().map(|_| "10.0.2.15/24 10.0.2.2".to_string()),
        snapshot: o.lab.snapshot_save.is_some(),
        generation: 0,
    };
    let f = backend.features();
    let refuse = |what: &str| Err(Error::Usage(format!("board `{}` ({}) has no {what}", board.id, backend.kind())));
    if !f.checkpoints && (o.checkpoint.is_some() || o.restore.is_some()) {
        return refuse("checkpoints (--checkpoint/--restore need gem5)");
    }
    if !f.shares && !o.lab.shares.is_empty() {
        return refuse("shared folders (--share): its descriptor has no [qemu.share]");
    }
    if !f.net && o.lab.net.is_some() {
        return refuse("network (--net): its descriptor has no [qemu.net]");
    }
    if !f.disks && !o.lab.disks.is_empty() {
        return refuse("disks (--disk): its descriptor has no [qemu.disk]");
    }
    if embedded && (!o.lab.shares.is_empty() || o.lab.net.is_some() || o.lab.rootfs.is_some()) {
        return refuse("lab setup: its initramfs is linked into the kernel");
    }
    if o.count_insns && !f.insn_count {
        return refuse("instruction counter (--count-insns: QEMU's TCG plugin; gem5's statistics are not read yet)");
    }
    if o.count_insns && o.smp.is_some_and(|n| n > 1) {
        // One counter for all vCPUs, added to without atomics.
        return Err(Error::Usage("--count-insns counts one vCPU: drop --smp".into()));
    }
    if o.count_insns && o.emu_args.iter().any(|a| a == "-d" || a == "-D" || a == "-plugin") {
        return Err(Error::Usage("--count-insns sets QEMU's -plugin, -d and -D itself: drop them from --emu-arg".into()));
    }
    if o.count_insns && o.interactive {
        return Err(Error::Usage("--count-insns counts a non-interactive boot (--check or --cmd): the counts are read when the emulator exits".into()));
    }
    if o.dump
        && let Err(why) = backend.dump_args()
    {
        return Err(Error::Usage(format!("board `{}` cannot dump a panicked guest (--dump): {why}", board.id)));
    }
    if o.dump && o.interactive {
        return Err(Error::Usage("--dump goes with --check or --cmd: the boot is judged, and a panic dumped, by kmatrix".into()));
    }
    if o.lab.distro.is_some() && !f.net {
        return refuse("network for ssh into a whole OS (--rootfs debian): its descriptor has no [qemu.net]");
    }
    if o.lab.rootfs.is_some() && !f.disks {
        return refuse("disk root (--rootfs): its descriptor has no [qemu.disk]");
    }
    if o.lab.rootfs.is_some() && (!o.modules.is_empty() || o.init.is_some() || o.busybox.is_some()) {
        return Err(Error::Usage("--rootfs boots the image's own userland: --module, --init and --busybox apply to initramfs boots (a module loads from a --share)".into()));
    }
    let mut disks = o.lab.disks.clone();
    let mut append = o.append.clone();
    let (snapshot, at_snapshot) = snapshots(cache, board, manifest, o, &conf, run_dir, &mut disks)?;
    // The init whose marker function ends "to the marker" (a disk root
    // carries its own: only the total is counted).
    let mut marker_init: Option<PathBuf> = None;
    let mut ssh = None;
    let mut net = o.lab.net.clone();
    let initrd = if let (Some(img), Some(d)) = (&o.lab.rootfs, &o.lab.distro) {
        // A whole OS boots its own init (systemd) with the root behind an
        // overlay and a NoCloud seed on the next disk.
        std::fs::create_dir_all(run_dir).map_err(Error::io(format!("cannot create {}", run_dir.display())))?;
        let overlay = crate::rootfs::disk::overlay(img, run_dir)?;
        disks.insert(0, crate::emulator::Disk { file: overlay, format: "qcow2".into(), readonly: false });
        let key = crate::boot::distro::key(cache)?;
        // Debian's hostname(1) refuses '_' (x86_64).
        let hostname = d.hostname.clone().unwrap_or_else(|| format!("kmx-{}", board.arch.replace('_', "-")));
        let seed = crate::boot::distro::seed(run_dir, &hostname, &format!("kmatrix-{nonce}"), &crate::boot::distro::public_keys(&key))?;
        disks.push(crate::emulator::Disk { file: seed, format: "raw".into(), readonly: true });
        let port = crate::debug::free_port()?;
        net.get_or_insert_with(Default::default).forwards.push((port, 22));
        let s = crate::boot::distro::Ssh { port, key, user: "root".into() };
        let json = serde_json::json!({ "port": port, "key": s.key, "user": s.user, "board": board.id, "hostname": hostname, "command": s.command_line() });
        crate::cache::write_atomic(&run_dir.join("ssh.json"), json.to_string().as_bytes())?;
        ssh = Some(s);
        append.extend(["root=/dev/vda", "rw", "rootfstype=ext4", "rootwait"].map(String::from));
        None
    } else if let Some(img) = &o.lab.rootfs {
        // The image stays as it is: the boot writes to an overlay, and its
        // configuration comes on a conf disk (one image, any boot).
        std::fs::create_dir_all(run_dir).map_err(Error::io(format!("cannot create {}", run_dir.display())))?;
        let overlay = crate::rootfs::disk::overlay(img, run_dir)?;
        disks.insert(0, crate::emulator::Disk { file: overlay, format: "qcow2".into(), readonly: false });
        // The configuration (generation 1, newer than none) on a conf disk:
        // the kernel command line is too short for it on some machines
        // (QEMU's malta passes at most 255 bytes).
        let conf_img = run_dir.join("conf.img");
        let c = image::InitConf { generation: 1, ..conf.clone() };
        std::fs::write(&conf_img, crate::rootfs::disk::conf_disk(&image::conf_text(&c))?).map_err(Error::io(format!("cannot write {}", conf_img.display())))?;
        disks.push(crate::emulator::Disk { file: conf_img, format: "raw".into(), readonly: true });
        let init = if o.interactive { "init=/sbin/init" } else { "init=/init" };
        append.extend(["root=/dev/vda", "rw", "rootfstype=ext4", "rootwait", init].map(String::from));
        None
    } else if embedded {
        None
    } else {
        let initrd = run_dir.join("initramfs.cpio.gz");
        let init_bin = match &o.init {
            Some(p) => p.clone(),
            None => init::build(cache, arch, tc)?,
        };
        let spec = image::Spec { init: init_bin, busybox: bb.clone(), conf: conf.clone(), modules: o.modules.clone() };
        image::write(&spec, &initrd, true)?;
        marker_init = Some(spec.init.clone());
        Some(initrd)
    };
    let staged = backend.prepare(&crate::emulator::Prepare {
        cache,
        reg,
        board,
        toolchain,
        install: o.install.as_ref(),
        run_dir,
        init_conf: &image::conf_text(&conf),
    })?;
    if let Some(dir) = &o.restore
        && !dir.is_dir() {
            return Err(Error::Usage(format!("no checkpoint directory {}", dir.display())));
        }
    if o.interactive && o.lab.rootfs.is_none() && (bb.is_some() || embedded) {
        // busybox init reads /etc/inittab: rcS, then a respawning shell.
        append.push("rdinit=/sbin/init".into());
    }
    let insns = if o.count_insns {
        let plugin = crate::emulator::insns::plugin(cache)?;
        let marker = match &marker_init {
            Some(p) => crate::emulator::insns::marker_address(p)?,
            None => None,
        };
        if marker.is_none() {
            say(&format!("counting instructions to the end only: the init has no {}", crate::emulator::insns::MARKER_SYMBOL));
        }
        Some(crate::emulator::insns::Counting { plugin, marker, log: run_dir.join("insns.log") })
    } else {
        None
    };
    let insns_log = insns.as_ref().map(|n| n.log.clone());
    let dump_qmp = o.dump.then(|| run_dir.join("qmp.sock"));
    if o.dump {
        // A panicked kernel then waits in panic() (instead of rebooting,
        // which -no-reboot turns into QEMU's exit) until it is dumped.
        append.push("panic=0".into());
    }
    let inputs = crate::emulator::BootInputs {
        // A build shared by several boards records the first one's image
        // (QEMU virt's Image); this board may want another (gem5's vmlinux).
        kernel: manifest.image.clone(),
        initrd,
        staged,
        checkpoint: match (&o.checkpoint, &o.restore) {
            (_, Some(dir)) => Some(crate::emulator::Checkpoint { dir: dir.clone(), restore: true }),
            (Some(dir), None) => Some(crate::emulator::Checkpoint { dir: dir.clone(), restore: false }),
            (None, None) => None,
        },
        dtb: manifest.dtb.clone(),
        append,
        memory_mib: o.memory_mib,
        smp: o.smp,
        interactive: o.interactive,
        extra_args: o.emu_args.clone(),
        run_dir: Some(run_dir.to_path_buf()),
        install: o.install.clone(),
        gdb_port: o.gdb_port,
        halted: o.halted,
        kgdb_port: o.kgdb_port,
        shares: o.lab.shares.clone(),
        net,
        disks,
        snapshot,
        insns,
        dump_qmp: dump_qmp.clone(),
    };
    Ok(PreparedBoot {
        command: backend.command(board, &inputs),
        nonce,
        run_dir: run_dir.to_path_buf(),
        console_file: backend.console_file(run_dir),
        explain: backend.explainer(),
        at_snapshot,
        insns_log,
        ssh,
        dump_qmp,
    })
}

pub fn valid_snapshot_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Where a board's snapshots with one kernel build are kept.
pub fn snapshot_dir(cache: &Cache, board: &Board, manifest: &build::Manifest) -> Result<PathBuf> {
    let build = manifest.dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    cache.dir("snapshots").map(|d| d.join(&board.id).join(build))
}

/// `--snapshot-save`/`--snapshot-load` (QEMU): the machine state goes to a
/// scratch qcow2 kept per board and kernel build (so a snapshot is never
/// loaded into another kernel), and the guest's configuration comes from a
/// small read-only conf disk that the host rewrites in place while the init
/// waits (a saving boot) or that carries the loading boot's nonce and
/// commands to the restored init.
fn snapshots(
    cache: &Cache,
    board: &Board,
    manifest: &build::Manifest,
    o: &BootOptions,
    conf: &crate::rootfs::image::InitConf,
    run_dir: &std::path::Path,
    disks: &mut Vec<crate::emulator::Disk>,
) -> Result<(Option<crate::emulator::Snapshot>, Option<crate::boot::SnapshotHook>)> {
    use crate::rootfs::image::conf_text;
    let backend = crate::emulator::of(board);
    // An interactive boot that could be snapshotted gets the monitor and
    // the state store anyway: `kmatrix snapshot save` from another terminal.
    let offer = o.interactive && backend.features().snapshots && o.lab.shares.is_empty() && o.lab.rootfs.is_none() && o.lab.disks.iter().all(|d| d.readonly);
    let name = match (&o.lab.snapshot_save, &o.lab.snapshot_load) {
        (None, None) if offer => String::new(),
        (None, None) => return Ok((None, None)),
        (Some(_), Some(_)) => return Err(Error::Usage("--snapshot-save and --snapshot-load are one each per boot".into())),
        (Some(n), None) | (None, Some(n)) => n.clone(),
    };
    if !backend.features().snapshots {
        return Err(Error::Usage(format!("board `{}` ({}) has no snapshots (they need [qemu.disk]; gem5 has --checkpoint)", board.id, backend.kind())));
    }
    if (!offer || !name.is_empty()) && !valid_snapshot_name(&name) {
        return Err(Error::Usage(format!("snapshot name `{name}`: letters, digits, `-`, `_` and `.` only")));
    }
    if !o.lab.shares.is_empty() {
        // QEMU: "Migration is disabled when VirtFS export path '...' is mounted in the guest".
        return Err(Error::Usage("a mounted 9p share blocks QEMU's savevm/loadvm: snapshots cannot be combined with --share".into()));
    }
    if o.lab.rootfs.is_some() || o.lab.disks.iter().any(|d| !d.readonly) {
        return Err(Error::Usage("snapshots of boots with a writable disk (--rootfs, --disk without readonly) are not supported yet: the disk's state would have to travel with the snapshot".into()));
    }
    if o.interactive && o.lab.snapshot_save.is_some() {
        return Err(Error::Usage("an interactive boot is saved from another terminal: `kmatrix snapshot save NAME` (--snapshot-save is for --check/--cmd boots)".into()));
    }
    let dir = snapshot_dir(cache, board, manifest)?;
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let store = dir.join("vmstate.qcow2");
    let qemu_img = |args: &[&str]| -> Result<String> {
        let cmd = crate::command::CommandSpec::new("qemu-img").args(args.iter().copied());
        let res = crate::process::output_spec(&cmd).map_err(|e| e.with_package("qemu-utils"))?;
        if !res.success() {
            return Err(Error::Infra(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&res.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&res.stdout).to_string())
    };
    let store_s = store.display().to_string();
    if !store.is_file() {
        qemu_img(&["create", "-q", "-f", "qcow2", &store_s, "16M"])?;
    }
    if o.lab.snapshot_load.is_some() {
        let list = qemu_img(&["snapshot", "-l", &store_s])?;
        let saved: Vec<&str> = list.lines().skip(2).filter_map(|l| l.split_whitespace().nth(1)).collect();
        if !saved.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "no snapshot `{name}` of board `{}` with this kernel build (saved: {})",
                board.id,
                if saved.is_empty() { "none".to_string() } else { saved.join(", ") }
            )));
        }
    }
    // The QMP socket lives in the run directory: only its owner gets in.
    std::fs::create_dir_all(run_dir).map_err(Error::io(format!("cannot create {}", run_dir.display())))?;
    std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(Error::io(format!("cannot restrict {}", run_dir.display())))?;
    let conf_disk = run_dir.join("conf.img");
    let disk_text = |generation: u64, cmds: Vec<String>, snapshot: bool| {
        let c = crate::rootfs::image::InitConf { generation, cmds, snapshot, ..conf.clone() };
        crate::rootfs::disk::conf_disk(&conf_text(&c))
    };
    let loading = o.lab.snapshot_load.is_some();
    // A loading boot hands the restored init (generation 0) its own
    // configuration at once; a saving one first gives it nothing newer.
    let first = if loading { disk_text(1, o.cmds.clone(), false)? } else { disk_text(0, vec![], false)? };
    std::fs::write(&conf_disk, &first).map_err(Error::io(format!("cannot write {}", conf_disk.display())))?;
    disks.push(crate::emulator::Disk { file: conf_disk.clone(), format: "raw".into(), readonly: true });
    let qmp = run_dir.join("qmp.sock");
    let snapshot = crate::emulator::Snapshot { store, qmp: qmp.clone(), load: o.lab.snapshot_load.clone() };
    let hook: Option<crate::boot::SnapshotHook> = if loading || o.interactive {
        None
    } else {
        let release = disk_text(1, vec![], false)?;
        Some(Box::new(move || {
            let mut q = crate::emulator::qmp::Qmp::connect(&qmp, std::time::Duration::from_secs(10))?;
            q.hmp(&format!("savevm {name}"))?;
            // In place: QEMU holds the file open, a rename would not reach it.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&conf_disk).map_err(|e| e.to_string())?;
            f.write_all(&release).and_then(|_| f.sync_all()).map_err(|e| e.to_string())
        }))
    };
    Ok((Some(snapshot), hook))
}

/// The `--checkpoint`/`--restore` directories, absolute (gem5 wants them
/// so). A checkpoint directory gets `kmatrix.json` naming the board and
/// kernel that take it; a restore is refused unless that stamp matches and
/// a `cpt.*` is there, so it never runs on another kernel.
pub fn checkpoint_dirs(board: &Board, manifest: &build::Manifest, checkpoint: Option<&std::path::Path>, restore: Option<&std::path::Path>) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let absolute = |p: &std::path::Path| std::path::absolute(p).map_err(Error::io(format!("bad path {}", p.display())));
    let checkpoint = checkpoint.map(absolute).transpose()?;
    let restore = restore.map(absolute).transpose()?;
    let stamp = serde_json::json!({ "board": board.id, "kernel": manifest.dir });
    if let Some(dir) = &checkpoint {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
        crate::cache::write_atomic(&dir.join("kmatrix.json"), stamp.to_string().as_bytes())?;
    }
    if let Some(dir) = &restore {
        let text = std::fs::read_to_string(dir.join("kmatrix.json")).map_err(Error::io(format!("{} is not a kmatrix checkpoint (no kmatrix.json)", dir.display())))?;
        let taken: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}/kmatrix.json: {e}", dir.display())))?;
        if taken != stamp {
            return Err(Error::Usage(format!("the checkpoint in {} was taken by {} (kernel {}), not by this board and kernel", dir.display(), taken["board"], taken["kernel"])));
        }
        let has_cpt = std::fs::read_dir(dir).map_err(Error::io(format!("cannot read {}", dir.display())))?.flatten().any(|e| e.file_name().to_string_lossy().starts_with("cpt."));
        if !has_cpt {
            return Err(Error::Usage(format!("no checkpoint (cpt.*) in {}: the boot that should have taken it did not reach its marker", dir.display())));
        }
    }
    Ok((checkpoint, restore))
}

/// A unique run directory name.
pub fn stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:06}", now.as_secs(), now.subsec_micros())
}
