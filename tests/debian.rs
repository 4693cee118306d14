//! A whole Debian (KMATRIX_TEST_REAL=1): `kmatrix rootfs debian` bootstraps
//! bookworm with mmdebstrap (root, network to the Debian mirror), and
//! `boot --rootfs debian --check` boots it with the shared lab kernel to
//! systemd's target, logs in over ssh with cloud-init's key and hostname,
//! runs a command and powers off. amd64 in CI (a native bootstrap, about
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
    let out = kmatrix(&[&["boot", "--arch", arch][..], common::shared_kernel(arch), &["--rootfs", "debian", "--hostname", &host, "--check", "--cmd", "hostname; systemctl is-active ssh"]].concat());
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
