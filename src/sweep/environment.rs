//! The header of a report: the host, and what each kernel, toolchain and
//! emulator of the run really was (releases as built, `--version` lines).

use super::results::{Environment, Results};
use crate::descriptor::Registry;
use crate::plan::Plan;

fn uname() -> (String, String) {
    // SAFETY: uname fills a zeroed struct of fixed-size C strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let s = |f: &[libc::c_char]| unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned();
    (s(&u.nodename), format!("{} {} {}", s(&u.sysname), s(&u.release), s(&u.machine)))
}

fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(v.trim_matches('"').to_string())
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

pub fn gather(reg: &Registry, plan: &Plan, r: &Results, built: &crate::emulator::Finder) -> Environment {
    let (host, host_kernel) = uname();
    let mut env = Environment { host, host_kernel, os: os_release(), ..Default::default() };
    for c in &r.cells {
        let k = env.kernels.entry(c.kernel.clone()).or_default();
        if k.source.is_none() {
            k.source = c.kernel_source.clone();
        }
        if let Some(rel) = &c.kernel_release {
            push_unique(&mut k.releases, rel);
        }
        if let Some(g) = &c.git {
            push_unique(&mut k.commits, &format!("{}{}", g.commit, if g.dirty { "-dirty" } else { "" }));
        }
        if let Some(v) = &c.toolchain_version {
            push_unique(env.toolchains.entry(c.toolchain.clone()).or_default(), v);
        }
    }
    let mut boards: Vec<&str> = plan.cells.iter().map(|c| c.board.as_str()).collect();
    boards.sort();
    boards.dedup();
    for b in boards {
        if let Some(board) = reg.boards.get(b) {
            let (name, version) = crate::emulator::describe(board, built);
            env.emulators.entry(name).or_insert(version);
        }
    }
    env
}
