//! Process trees from /proc, for the tests that kill kmatrix and check
//! that nothing it started survives (by tree and start time, not by name).

use std::collections::BTreeMap;

/// (ppid, state, start time) of a process, from /proc/<pid>/stat.
pub fn stat(pid: i32) -> Option<(i32, char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[1].parse().ok()?, f[0].chars().next()?, f[19].parse().ok()?))
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ")
}

/// Every live descendant of `root`, with its start time (so a recycled pid
/// is never mistaken for a survivor).
pub fn descendants(root: i32) -> BTreeMap<i32, u64> {
    let mut all: BTreeMap<i32, (i32, u64)> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
            && let Some((ppid, state, start)) = stat(pid)
            && state != 'Z'
        {
            all.insert(pid, (ppid, start));
        }
    }
    let mut out = BTreeMap::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&pid, &(ppid, start)) in &all {
            if ppid == p && out.insert(pid, start).is_none() {
                frontier.push(pid);
            }
        }
    }
    out
}

/// The processes of `seen` still alive (same pid, same start time, not a
/// zombie), with their command lines.
pub fn survivors(seen: &BTreeMap<i32, u64>) -> Vec<String> {
    seen.iter()
        .filter(|(pid, start)| stat(**pid).is_some_and(|(_, state, st)| state != 'Z' && st == **start))
        .map(|(pid, _)| format!("{pid}: {}", cmdline(*pid)))
        .collect()
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// kill(2) on a child of the test.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: signalling a process the test started.
    unsafe { libc_kill(pid, sig) };
}
