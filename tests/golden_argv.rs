//! Golden emulator argv and build recipes for every shipped board: what
//! `kmatrix show` prints and the runner spawns, rendered from the descriptors
//! alone (no host probing), so a descriptor or backend change shows up as a
//! snapshot diff (tests/snapshots/golden_argv__argv-<board>.snap,
//! golden_argv__recipe-<board>.snap).

use kmatrix::command::CommandSpec;
use kmatrix::descriptor::{self, Board, Emulator, Layers, Registry};
use kmatrix::emulator::{self, BootInputs, Checkpoint};
use kmatrix::recipe::{self, Paths};

fn registry() -> Registry {
    descriptor::load(&Layers::default()).unwrap_or_else(|d| {
        panic!("shipped descriptors are invalid:\n{}", d.iter().map(|x| x.render()).collect::<Vec<_>>().join("\n"))
    })
}

/// The boot inputs of the golden files: fixed paths, a dtb only where the
/// board builds one.
fn inputs(board: &Board) -> BootInputs {
    BootInputs {
        kernel: "/K/Image".into(),
        initrd: Some("/K/initramfs.cpio.gz".into()),
        dtb: board.kernel.dtb.as_ref().map(|_| "/K/board.dtb".into()),
        run_dir: Some("/RUN".into()),
        staged: [("disk-image", "/RUN/disk.img"), ("readfile", "/RUN/kmatrix.conf"), ("bootloader", "/B/boot.arm64")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn shipped_boards_are_all_covered() {
    let reg = registry();
    let ids: Vec<&str> = reg.boards.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "gem5-arm",
            "gem5-x86",
            "qemu-aarch64-virt",
            "qemu-arm-versatilepb",
            "qemu-mips64-malta",
            "qemu-mips64el-malta",
            "qemu-x86_64-pc"
        ],
        "a board was added or removed: its golden files come and go with it"
    );
}

#[test]
fn argv_per_board() {
    let reg = registry();
    for board in reg.boards.values() {
        let spec = emulator::command(board, &inputs(board));
        insta::assert_snapshot!(format!("argv-{}", board.id), spec.to_string());
    }
}

#[test]
fn argv_qemu_aarch64_virt_gdb_halted() {
    let reg = registry();
    let board = &reg.boards["qemu-aarch64-virt"];
    let i = BootInputs { gdb_port: Some(1234), halted: true, append: vec!["nokaslr".into()], ..inputs(board) };
    let spec = emulator::command(board, &i);
    let s = spec.to_string();
    assert!(s.contains(" -gdb tcp:127.0.0.1:1234 -S"), "{s}");
    assert!(s.contains("'console=ttyAMA0 earlycon panic=-1 nokaslr'"), "{s}");
    insta::assert_snapshot!("argv-qemu-aarch64-virt-gdb-halted", s);
}

/// gem5: listeners only when someone connects, the debugger wait, and the
/// checkpoint and restore arguments from the descriptor.
#[test]
fn argv_gem5_modes() {
    let reg = registry();
    for id in ["gem5-arm", "gem5-x86"] {
        let board = &reg.boards[id];
        let plain = emulator::command(board, &inputs(board)).to_string();
        assert!(plain.contains("--listener-mode=off"), "{plain}");
        assert!(!plain.contains("gdb"), "{plain}");
        let halted = emulator::command(board, &BootInputs { gdb_port: Some(7001), halted: true, ..inputs(board) }).to_string();
        assert!(halted.contains("--listener-mode=on"), "{halted}");
        assert!(halted.ends_with("--wait-gdb"), "{halted}");
        let cpt = emulator::command(board, &BootInputs { checkpoint: Some(Checkpoint { dir: "/CPT".into(), restore: false }), ..inputs(board) }).to_string();
        assert!(cpt.ends_with("--checkpoint-dir=/CPT"), "{cpt}");
        let rst = emulator::command(board, &BootInputs { checkpoint: Some(Checkpoint { dir: "/CPT".into(), restore: true }), ..inputs(board) }).to_string();
        assert!(rst.ends_with("--checkpoint-dir=/CPT --checkpoint-restore=1"), "{rst}");
    }
    // --param statements are exec()d by gem5: the path is a Python literal.
    let board = &reg.boards["gem5-arm"];
    let odd = emulator::command(board, &BootInputs { initrd: Some("/K/a\"b'c.cpio".into()), ..inputs(board) });
    assert!(odd.args.contains(&r#"--param=system.workload.initrd_filename = "/K/a\"b'c.cpio""#.to_string()), "{odd}");
}

/// Every way a boot can be asked for, on every board.
fn all_variants(board: &Board) -> Vec<CommandSpec> {
    let base = inputs(board);
    let mut out = Vec::new();
    for gdb_port in [None, Some(1234), Some(65535)] {
        for halted in [false, true] {
            for interactive in [false, true] {
                let i = BootInputs { gdb_port, halted, interactive, ..base.clone() };
                out.push(emulator::command(board, &i));
            }
        }
    }
    out.push(emulator::command(board, &BootInputs { kernel: "/K/Image".into(), gdb_port: Some(1), ..Default::default() }));
    out
}

/// A gdbstub gives full control of the guest: it must only ever listen on
/// loopback.
#[test]
fn gdbstub_listens_on_loopback_only() {
    let reg = registry();
    for board in reg.boards.values() {
        for spec in all_variants(board) {
            let shown = spec.to_string();
            for (k, v) in &spec.env {
                assert!(!v.contains("0.0.0.0") && !k.contains("0.0.0.0"), "{}: {shown}", board.id);
            }
            for (n, a) in spec.args.iter().enumerate() {
                assert!(!a.contains("0.0.0.0"), "{}: {shown}", board.id);
                // `tcp::PORT` (empty host) binds every interface.
                assert!(!a.contains("tcp::"), "{}: {shown}", board.id);
                if let Emulator::Qemu(_) = board.emulator {
                    // `-s` is QEMU's shorthand for `-gdb tcp::1234`.
                    assert_ne!(a, "-s", "{}: {shown}", board.id);
                    if a == "-gdb" {
                        let v = spec.args.get(n + 1).map(String::as_str).unwrap_or("");
                        assert!(v.starts_with("tcp:127.0.0.1:"), "{}: -gdb {v}: {shown}", board.id);
                    } else {
                        assert!(!a.starts_with("-gdb"), "{}: {a}: {shown}", board.id);
                    }
                }
            }
        }
    }
}

#[test]
fn recipe_per_board() {
    let reg = registry();
    let gcc = &reg.toolchains["gcc"];
    for board in reg.boards.values() {
        let arch = &reg.arches[&board.arch];
        let inputs = recipe::config_inputs(&reg, arch, board, None);
        let r = recipe::recipe(&Paths::placeholders(), arch, gcc, &inputs, &recipe::targets(board, &[], &recipe::requested(&inputs)), false, "@0");
        let mut text = String::new();
        if let Some(f) = &r.base_file {
            text.push_str(&format!("cp {} <build>/.config\n", f.display()));
        }
        for c in r.configure.iter().chain(std::iter::once(&r.build)) {
            text.push_str(&c.to_string());
            text.push('\n');
        }
        insta::assert_snapshot!(format!("recipe-{}", board.id), text);
    }
}

/// The gdb setup per arch: vmlinux first, the arch's architecture, endian
/// and (mips) n64 ABI before `target remote`, the arch's breakpoint kind.
#[test]
fn gdb_setup_per_arch() {
    let reg = kmatrix::descriptor::load(&kmatrix::descriptor::Layers::default()).unwrap();
    for arch in reg.arches.values() {
        let a = kmatrix::gdb::Attach {
            vmlinux: "/B/vmlinux".into(),
            build_dir: "/B".into(),
            port: 1234,
            breakpoints: vec!["start_kernel".into()],
            helpers: None,
        };
        let cmds = kmatrix::gdb::setup_commands(arch, &a);
        let remote = cmds.iter().position(|c| c.starts_with("target remote 127.0.0.1:")).unwrap();
        let file = cmds.iter().position(|c| c.starts_with("file ")).unwrap();
        assert!(file < remote);
        if arch.gdb.mips_abi.is_some() {
            let abi = cmds.iter().position(|c| c == "set mips abi n64").unwrap();
            assert!(abi < remote, "the ABI must be set before attaching");
        }
        insta::assert_snapshot!(format!("gdb-{}", arch.id), cmds.join("\n"));
    }
}

/// The lab devices on every QEMU board: a share (with a comma in its path,
/// which QEMU's option syntax needs doubled), a user network with a
/// forwarded port on loopback only, and a read-only disk.
#[test]
fn argv_lab_devices_per_board() {
    let reg = registry();
    for board in reg.boards.values().filter(|b| matches!(b.emulator, kmatrix::descriptor::Emulator::Qemu(_))) {
        let i = BootInputs {
            shares: vec![emulator::Share { path: "/src/a,b".into(), tag: "host0".into() }],
            net: Some(emulator::Net { forwards: vec![(10022, 22)] }),
            disks: vec![emulator::Disk { file: "/img/d.qcow2".into(), format: "qcow2".into(), readonly: true }],
            ..inputs(board)
        };
        let s = emulator::command(board, &i).to_string();
        assert!(s.contains("hostfwd=tcp:127.0.0.1:10022-:22"), "{s}");
        assert!(s.contains("path=/src/a,,b"), "{s}");
        assert!(s.contains("readonly=on"), "{s}");
        assert!(!s.contains("0.0.0.0"), "{s}");
        let f = emulator::of(board).features();
        assert!(f.shares && f.net && f.disks, "{}: {f:?}", board.id);
        insta::assert_snapshot!(format!("argv-lab-{}", board.id), s);
    }
}

/// `debug --kgdb`: each QEMU board's KGDB line is a socket server on
/// loopback (never another address), and no emulator stub or halt.
#[test]
fn argv_kgdb_line_is_loopback_only() {
    let reg = registry();
    for board in reg.boards.values().filter(|b| emulator::of(b).features().kgdb) {
        let i = BootInputs { kgdb_port: Some(4321), ..inputs(board) };
        let s = emulator::command(board, &i).to_string();
        assert!(s.contains("-chardev socket,id=kmxkgdb,host=127.0.0.1,port=4321,server=on,wait=off"), "{}: {s}", board.id);
        assert!(!s.contains(" -gdb ") && !s.contains(" -S"), "{}: {s}", board.id);
        assert!(emulator::of(board).kgdb_tty().is_some());
    }
    // Every QEMU board has one; gem5 has none (`debug --kgdb` says so).
    let with: Vec<&str> = reg.boards.values().filter(|b| emulator::of(b).features().kgdb).map(|b| b.id.as_str()).collect();
    assert_eq!(with, ["qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta", "qemu-x86_64-pc"]);
}
