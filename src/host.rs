//! The host: which tools the selected boards and toolchains need, whether
//! they are installed, and the Debian packages that provide them. Package
//! names come from the descriptors, never from code keyed on an arch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::descriptor::{Board, Registry, Toolchain};

/// Finds a program on PATH (or checks an explicit path).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether dpkg says a package is installed (false when dpkg is absent).
pub fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// A program that must be on PATH.
    Program(String),
    /// A package with no single program to look for (a cross libc).
    Package,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub what: String,
    pub check: Check,
    pub package: String,
    pub needed_by: String,
}

impl Requirement {
    pub fn satisfied(&self) -> bool {
        match &self.check {
            Check::Program(p) => which(p).is_some(),
            Check::Package => package_installed(&self.package),
        }
    }
}

/// Tools every kernel build needs, whatever the arch.
const BUILD_TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("bc", "bc"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("perl", "perl"),
];
/// Headers a kernel build needs (objtool, certificates).
const BUILD_PACKAGES: &[&str] = &["libelf-dev", "libssl-dev"];

pub fn requirements(reg: &Registry, boards: &[&Board], toolchains: &[&Toolchain], debug: bool) -> Vec<Requirement> {
    let mut out = BTreeSet::new();
    for (prog, pkg) in BUILD_TOOLS {
        out.insert(Requirement { what: (*prog).into(), check: Check::Program((*prog).into()), package: (*pkg).into(), needed_by: "kernel build".into() });
    }
    for pkg in BUILD_PACKAGES {
        out.insert(Requirement { what: (*pkg).into(), check: Check::Package, package: (*pkg).into(), needed_by: "kernel build".into() });
    }
    for b in boards {
        out.extend(crate::emulator::of(b).requirements(b));
        for t in toolchains {
            let Some(target) = t.targets.get(&b.arch) else { continue };
            let needed_by = format!("{} with {}", b.arch, t.id);
            let mut pkgs = target.packages.iter();
            if let Some(first) = pkgs.next() {
                out.insert(Requirement { what: target.cc.clone(), check: Check::Program(target.cc.clone()), package: first.clone(), needed_by: needed_by.clone() });
            }
            for p in pkgs {
                out.insert(Requirement { what: p.clone(), check: Check::Package, package: p.clone(), needed_by: needed_by.clone() });
            }
        }
    }
    // The matrix's Debian kernel sources (linux-source-6.1, linux-source-6.12).
    let kernels = reg.matrix.as_ref().map(|m| m.kernels.as_slice()).unwrap_or_default();
    for k in kernels {
        if let crate::descriptor::SourceSpec::System { version: Some(v) } = &k.source {
            let pkg = format!("linux-source-{v}");
            out.insert(Requirement { what: format!("/usr/src/{pkg}.tar.xz"), check: Check::Package, package: pkg, needed_by: format!("kernel {}", k.id) });
        }
    }
    if debug {
        out.insert(Requirement { what: "gdb-multiarch".into(), check: Check::Program("gdb-multiarch".into()), package: "gdb-multiarch".into(), needed_by: "kmatrix debug".into() });
        // The lab's disk roots and overlays.
        out.insert(Requirement { what: "qemu-img".into(), check: Check::Program("qemu-img".into()), package: "qemu-utils".into(), needed_by: "boot --rootfs".into() });
        out.insert(Requirement { what: "mke2fs".into(), check: Check::Program("mke2fs".into()), package: "e2fsprogs".into(), needed_by: "kmatrix rootfs build".into() });
    }
    out.into_iter().collect()
}

/// The argv that installs packages (sudo when not root).
pub fn apt_install(packages: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        v.push("sudo".to_string());
    }
    v.extend(["apt-get", "install", "-y", "--no-install-recommends"].map(String::from));
    v.extend(packages.iter().cloned());
    v
}
