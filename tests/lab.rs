//! The debug lab on every QEMU machine (KMATRIX_TEST_REAL=1): a 9p share
//! read and written from both sides, the guest reaching a loopback server
//! on the host through user-mode networking, and a host client reaching a
//! guest listener through `--forward`. One boot per machine with the debug
//! profile's kernel (the one `tests/debug.rs` builds). Also the ext4 disk
//! root and QEMU snapshots (save, then load and find the guest's change).

mod common;
use common::kmatrix;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Guest commands: busybox's where Debian has a busybox for the arch (the
/// arch descriptor names a Debian arch), else the tools kmatrix's init
/// carries (`/init kmx ...`; big-endian mips64).
struct Tools {
    busybox: bool,
}

impl Tools {
    fn of(arch: &str) -> Tools {
        let reg = kmatrix::descriptor::load(&kmatrix::descriptor::Layers::default()).unwrap_or_else(|_| panic!("shipped descriptors load"));
        Tools { busybox: reg.arch(arch).unwrap_or_else(|| panic!("arch {arch}")).debian_arch.is_some() }
    }
    fn cat(&self, f: &str) -> String {
        if self.busybox { format!("cat {f}") } else { format!("/init kmx cat {f}") }
    }
    fn write(&self, f: &str, text: &str) -> String {
        if self.busybox { format!("echo {text} > {f}") } else { format!("/init kmx write {f} {text}") }
    }
    fn get(&self, port: u16) -> String {
        if self.busybox { format!("wget -q -O - http://10.0.2.2:{port}/") } else { format!("/init kmx get 10.0.2.2 {port}") }
    }
    fn serve(&self, port: u16, text: &str) -> String {
        if self.busybox { format!("echo {text} | nc -l -p {port}") } else { format!("/init kmx serve {port} {text}") }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-page HTTP server on the host's loopback, for the guest's wget.
fn host_server() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let served = Arc::new(AtomicBool::new(false));
    let flag = served.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let body = "host-says-hi\n";
            let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            flag.store(true, Ordering::SeqCst);
        }
    });
    (port, served)
}

/// Connects to the forwarded port until the guest's listener answers.
fn poll_forward(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<(String, Duration)>> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(300) {
            // slirp accepts on the host side before the guest listens, and
            // closes it when the guest refuses: a connection that ends with
            // nothing is retried. One that is merely slow is never dropped:
            // slirp retries its SYN, and the guest's one-shot listener may
            // accept it later (a 2 s timeout lost the answer on mips64el).
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
                let mut s = String::new();
                let _ = c.read_to_string(&mut s);
                if s.contains("guest-listens") {
                    return Some((s, start.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    })
}

fn lab(arch: &str) {
    common::build_shared(arch);
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("hello.txt"), format!("written-on-the-host {arch}\n")).unwrap();
    let (http, served) = host_server();
    let fwd = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_forward(fwd, stop.clone());
    let share_arg = format!("{}:host0", share.path().display());
    let fwd_arg = format!("{fwd}:8080");
    let t = Tools::of(arch);
    let start = Instant::now();
    let out = kmatrix(&[
        &["boot", "--arch", arch][..], common::shared_kernel(arch), &["--check",
        "--share", &share_arg, "--net", "user", "--forward", &fwd_arg,
        "--cmd", &t.cat("/mnt/host0/hello.txt"),
        "--cmd", &t.write("/mnt/host0/from-guest.txt", "written-in-the-guest"),
        "--cmd", &t.get(http),
        "--cmd", &t.serve(8080, "guest-listens")],
    ].concat());
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let forwarded = poller.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains(&format!("written-on-the-host {arch}")), "the guest did not read the host's file: {s}");
    let back = std::fs::read_to_string(share.path().join("from-guest.txt")).unwrap_or_default();
    assert_eq!(back, "written-in-the-guest\n", "the host did not see the guest's file: {s}");
    assert!(s.contains("host-says-hi") && served.load(Ordering::SeqCst), "the guest did not reach the host's loopback server: {s}");
    let (_, after) = forwarded.unwrap_or_else(|| panic!("no answer from the guest's listener through --forward: {s}"));
    eprintln!("LAB {arch}: share read+write pass, slirp to host pass, forward pass ({:.1}s after start); boot+checks {:.1}s", after.as_secs_f64(), took.as_secs_f64());
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lab_x86_64() {
    lab("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lab_aarch64() {
    lab("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lab_arm_versatilepb() {
    lab("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lab_mips64() {
    lab("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lab_mips64el() {
    lab("mips64el");
}

/// The ext4 disk root: built without mounting, booted as /dev/vda with no
/// initramfs, and left unchanged by a boot that writes to it.
fn disk_root(arch: &str) {
    common::build_shared(arch);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.ext4");
    let img_s = img.display().to_string();
    let out = kmatrix(&["rootfs", "build", "--arch", arch, "--out", &img_s]);
    assert_eq!(out.status.code(), Some(0));
    let before = std::fs::read(&img).unwrap();
    let start = Instant::now();
    let t = Tools::of(arch);
    let out = kmatrix(&[&["boot", "--arch", arch][..], common::shared_kernel(arch), &["--check", "--rootfs", &img_s, "--cmd", &t.cat("/proc/mounts"), "--cmd", &t.write("/etc/kmx", "changed"), "--cmd", &t.cat("/etc/kmx")]].concat());
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("/dev/root / ext4 rw"), "the root is not the ext4 disk: {s}");
    assert!(s.contains("changed"), "{s}");
    assert!(std::fs::read(&img).unwrap() == before, "the boot changed the image (it must write to its overlay)");
    eprintln!("LAB {arch}: ext4 disk root pass ({:.1}s)", start.elapsed().as_secs_f64());
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn disk_root_x86_64() {
    disk_root("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn disk_root_aarch64() {
    disk_root("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn disk_root_arm_versatilepb() {
    disk_root("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn disk_root_mips64() {
    disk_root("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn disk_root_mips64el() {
    disk_root("mips64el");
}

/// QEMU snapshots over QMP: a boot changes a file and saves the machine;
/// a second boot loads that snapshot and finds the file as it was left.
fn snapshot(arch: &str) {
    common::build_shared(arch);
    let name = format!("t{}", std::process::id());
    let token = format!("state-{arch}-{name}");
    let start = Instant::now();
    let t = Tools::of(arch);
    let out = kmatrix(&[&["boot", "--arch", arch][..], common::shared_kernel(arch), &["--check", "--snapshot-save", &name, "--cmd", &t.write("/root/state", &token)]].concat());
    let saved = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let start = Instant::now();
    let out = kmatrix(&[&["boot", "--arch", arch][..], common::shared_kernel(arch), &["--check", "--snapshot-load", &name, "--cmd", &t.cat("/root/state")]].concat());
    let loaded = start.elapsed();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains(&token), "the loaded snapshot lacks the file the guest wrote: {s}");
    assert!(s.contains("restored"), "{s}");
    eprintln!("LAB {arch}: snapshot save {:.1}s, load {:.1}s pass", saved.as_secs_f64(), loaded.as_secs_f64());
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn snapshot_x86_64() {
    snapshot("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn snapshot_aarch64() {
    snapshot("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn snapshot_arm_versatilepb() {
    snapshot("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn snapshot_mips64() {
    snapshot("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and qemu-utils: set KMATRIX_TEST_REAL=1 (CI does)")]
fn snapshot_mips64el() {
    snapshot("mips64el");
}

/// A module built with `kmatrix module build` loads from a share: no
/// initramfs rebuild.
#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn module_loads_from_a_share() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kmx_share.c"),
        "#include <linux/module.h>\n#include <linux/init.h>\nstatic int __init kmx_share_init(void)\n{\n\tpr_info(\"kmx_share loaded from the share\\n\");\n\treturn 0;\n}\nmodule_init(kmx_share_init);\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Kbuild"), "obj-m := kmx_share.o\n").unwrap();
    let d = dir.path().to_str().unwrap();
    common::build_shared("aarch64");
    assert_eq!(kmatrix(&["module", "build", "--arch", "aarch64", d]).status.code(), Some(0));
    let share = format!("{d}:mods");
    let out = kmatrix(&["boot", "--arch", "aarch64", "--check", "--share", &share, "--cmd", "insmod /mnt/mods/kmx_share.ko", "--cmd", "dmesg | grep kmx_share"]);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("kmx_share loaded from the share"), "{s}");
}

/// Guest instruction counts through kmatrix's TCG plugin: twice to the
/// boot marker and to the end, with the spread printed (TCG without
/// -icount follows the host's timing, so the counts are close, not equal).
fn insns(arch: &str) {
    common::build_shared(arch);
    let count = || {
        let out = kmatrix(&[&["boot", "--arch", arch, "--profile", "debug"][..], common::shared_kernel(arch), &["--count-insns"]].concat());
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "{s}");
        let line = s.lines().find(|l| l.starts_with("instructions: ")).unwrap_or_else(|| panic!("no counts: {s}"));
        let num = |after: &str| -> u64 {
            let rest = &line[line.find(after).unwrap_or_else(|| panic!("{line}")) + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or_else(|_| panic!("no number after {after:?}: {line}"))
        };
        (num("to the marker "), num("to the end "))
    };
    let (m1, e1) = count();
    let (m2, e2) = count();
    for (m, e) in [(m1, e1), (m2, e2)] {
        // A kernel boot is hundreds of millions of instructions; the end
        // comes after the marker (the commands, the power-off).
        assert!(m > 10_000_000 && e > m, "implausible counts: marker {m}, end {e}");
    }
    let spread = (m1.abs_diff(m2)) as f64 / m1.min(m2) as f64 * 100.0;
    eprintln!("INSNS {arch}: to the marker {m1} and {m2} (spread {spread:.2}%), to the end {e1} and {e2}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn insns_x86_64() {
    insns("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn insns_aarch64() {
    insns("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn insns_arm_versatilepb() {
    insns("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn insns_mips64() {
    insns("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers and QEMU: set KMATRIX_TEST_REAL=1 (CI does)")]
fn insns_mips64el() {
    insns("mips64el");
}

/// A kernel made to panic (its init cannot run: `rdinit=/` is a directory,
/// `init=` names nothing) is paused, dumped over QMP, and drgn names the
/// panicking function, kernel_init, under panic() in the task's backtrace.
fn dump(arch: &str) {
    common::build_shared(arch);
    let out = kmatrix(&[&["boot", "--arch", arch][..], common::shared_kernel(arch), &["--check", "--dump", "--append", "rdinit=/", "--append", "init=/nonexistent"]].concat());
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    // A panic is the kernel's failure, not kmatrix's: exit 1.
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.starts_with("PANIC ") || s.contains("\nPANIC "), "{s}");
    assert!(s.contains("dump: ") && s.contains("vmcore ("), "no dump: {s}");
    let frames: Vec<&str> = s.lines().filter(|l| l.trim_start().starts_with('#')).map(|l| l.split_whitespace().nth(1).unwrap_or("")).collect();
    let p = frames.iter().position(|f| *f == "panic").unwrap_or_else(|| panic!("no panic() frame: {s}"));
    assert_eq!(frames.get(p + 1), Some(&"kernel_init"), "the frame under panic() is not the panicking function: {s}");
    eprintln!("DUMP {arch}: {}", frames.join(" < "));
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and drgn from PyPI: set KMATRIX_TEST_REAL=1 (CI does)")]
fn dump_x86_64() {
    dump("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and drgn from PyPI: set KMATRIX_TEST_REAL=1 (CI does)")]
fn dump_aarch64() {
    dump("aarch64");
}

/// `[[override]] dump = true` in a sweep: the panicking cell's detail and
/// its `logs/<cell>.backtrace.txt` carry drgn's backtrace. The panic comes
/// from a project board whose command line names no runnable init.
#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and drgn from PyPI: set KMATRIX_TEST_REAL=1 (CI does)")]
fn sweep_dump_x86_64() {
    common::build_shared("x86_64");
    let proj = tempfile::tempdir().unwrap();
    std::fs::create_dir(proj.path().join("boards")).unwrap();
    let board = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/boards/qemu-x86_64-pc.toml")).unwrap();
    let line = board.lines().find(|l| l.starts_with("cmdline = ")).unwrap();
    let panicking = board.replace(line, &line.replace("panic=-1\"", "panic=-1 rdinit=/ init=/nonexistent\""));
    assert_ne!(board, panicking);
    std::fs::write(proj.path().join("boards/qemu-x86_64-pc.toml"), panicking).unwrap();
    std::fs::write(
        proj.path().join("matrix.toml"),
        "boards = [\"qemu-x86_64-pc\"]\ntoolchains = [\"gcc\"]\nkernels = [\"debian-6.1\"]\nconfigs = [\"debug\"]\n\n[kernel.\"debian-6.1\"]\nversion = \"6.1\"\n\n[config.debug]\ndescription = \"debug\"\nprofile = \"debug\"\n\n[[override]]\nboard = \"qemu-x86_64-pc\"\ndump = true\n",
    )
    .unwrap();
    let results = proj.path().join("results");
    let out = common::kmatrix_in(proj.path(), &["sweep", "--retries", "0", "--results-dir", &results.display().to_string()]);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("backtrace: ") && s.contains("panic < kernel_init"), "{s}");
    let bt: Vec<_> = std::fs::read_dir(results.join("logs")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".backtrace.txt")).collect();
    assert_eq!(bt.len(), 1, "no backtrace file in {}", results.display());
    let text = std::fs::read_to_string(bt[0].path()).unwrap();
    assert!(text.contains("kernel_init (init/main.c:"), "{text}");
}
