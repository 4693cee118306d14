//! A whole Debian (KMATRIX_TEST_REAL=1): `kmatrix rootfs debian` bootstraps
//! bookworm with mmdebstrap (root, network to the Debian mirror), and
//! `boot --rootfs debian --check` boots it with the shared lab kernel to
//! systemd's target, logs in over ssh with cloud-init's key and hostname,
//! runs a command (while `kmatrix ssh` logs in beside it) and powers off. amd64 in CI (a native bootstrap, about
//! 90 s); the foreign arches take 10-15 min of qemu-user each, so they are
//! run by hand (`--ignored`).

mod common;
use common::kmatrix;

fn debian(arch: &str) {
    common::build_shared(arch);
    let _one = common::exclusive("debian-boot");
    let out = kmatrix(&["rootfs", "debian", "--arch", arch]);
    assert_eq!(out.status.code(), Some(0));
    let img = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lock = std::path::Path::new(&img).with_file_name("packages.tsv");
    let pkgs = std::fs::read_to_string(&lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    for p in ["systemd\t", "dbus\t", "openssh-server\t", "cloud-init\t", "locales\t"] {
        assert!(pkgs.lines().any(|l| l.starts_with(p)), "{p} not in {}", lock.display());
    }
    let host = format!("kmx-test-{}", arch.replace('_', "-"));
    // While the guest sleeps in its command, `kmatrix ssh` logs in too.
    let boot = {
        let (arch, host) = (arch.to_string(), host.clone());
        std::thread::spawn(move || kmatrix(&[&["boot", "--arch", &arch][..], common::shared_kernel(&arch), &["--rootfs", "debian", "--hostname", &host, "--check", "--cmd", "hostname; systemctl is-active ssh", "--cmd", "sleep 40"]].concat()))
    };
    let start = std::time::Instant::now();
    let via = loop {
        let o = assert_cmd::Command::cargo_bin("kmatrix").unwrap().env("KMATRIX_CACHE_DIR", common::cache()).args(["ssh", "--arch", arch, "--", "echo via-kmatrix-ssh; hostname"]).timeout(std::time::Duration::from_secs(60)).output().unwrap();
        if o.status.success() || boot.is_finished() || start.elapsed().as_secs() > 1500 {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    };
    assert_eq!(via, format!("via-kmatrix-ssh\n{host}\n"), "`kmatrix ssh` did not log in while the guest was up");
    let out = boot.join().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains(&format!("{host}\nactive")), "cloud-init's hostname or sshd missing: {s}");
    let verdict = s.lines().find(|l| l.starts_with("PASS")).unwrap_or_else(|| panic!("{s}"));
    assert!(verdict.contains("systemd running") && verdict.contains("login prompt ") && verdict.contains("ssh "), "{verdict}");
    eprintln!("DEBIAN {arch}: {verdict}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs root, mmdebstrap, the Debian mirror, QEMU and a real kernel: set KMATRIX_TEST_REAL=1 (CI does)")]
fn debian_x86_64() {
    debian("x86_64");
}

#[test]
#[ignore = "a foreign bootstrap under qemu-user takes 10-15 min: run by hand with --ignored"]
fn debian_aarch64() {
    debian("aarch64");
}

#[test]
#[ignore = "a foreign bootstrap under qemu-user takes 10-15 min: run by hand with --ignored"]
fn debian_arm_versatilepb() {
    debian("arm");
}

#[test]
#[ignore = "a foreign bootstrap under qemu-user takes 10-15 min: run by hand with --ignored"]
fn debian_mips64el() {
    debian("mips64el");
}
