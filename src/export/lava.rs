//! LAVA (the engine of KernelCI's and LKFT's labs): a QEMU cell as a LAVA
//! job — device type `qemu`, the board's `[qemu.lava]` as the job's
//! `context:`, kmatrix's kernel, dtb and initramfs (with the cell's nonce)
//! as `file://` or lab URLs, and kmatrix's boot marker as a `monitors:`
//! test case. Run locally, `lava-run` gets a device dictionary written
//! here from the same descriptor, and its log is read back into a cell
//! result, so a LAVA boot merges with any other part of the plan.
//!
//! What a LAVA run loses: gdb and KGDB, `--dump`, the console-silence
//! timeout and log cap, lab devices (9p shares, disks, forwards), gem5, and
//! machines LAVA's qemu template has no arch for (mips64el).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::boot::BootResult;
use crate::descriptor::{Board, Emulator, Lava};
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Verdict};

/// How the sweep runner boots cells through LAVA.
#[derive(Debug, Clone)]
pub struct Mode {
    /// Jobs, devices, files and LAVA's own output go here.
    pub out: PathBuf,
    /// Run each job with `lava-run` (else only write it).
    pub run: bool,
    /// Where a lab fetches `out/files/` from (None: `file://` paths).
    pub base_url: Option<String>,
}

/// The board's LAVA description, or why it has none.
pub fn of(board: &Board) -> std::result::Result<&Lava, String> {
    match &board.emulator {
        Emulator::Qemu(q) => match &q.lava {
            Some(Ok(l)) => Ok(l),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("board `{}` has no [qemu.lava] (LAVA's arch and context for it)", board.id)),
        },
        Emulator::Gem5(_) => Err("LAVA has no gem5 boot method".into()),
    }
}

fn after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str)
}

fn context(board: &Board, l: &Lava) -> Value {
    let mut c = l.context.clone();
    c.insert("arch".into(), json!(l.arch));
    c.insert("memory".into(), json!(board.memory_mib));
    c.insert("extra_options".into(), json!(l.extra_options));
    Value::Object(c)
}

/// A device dictionary for `lava-run`, as LAVA's qemu template renders one
/// for this context (its fixed NIC, -nographic and -monitor none; -cpu and
/// -machine where the context names them).
pub fn device(board: &Board, l: &Lava) -> Value {
    let Emulator::Qemu(q) = &board.emulator else { unreachable!("of() admits QEMU boards only") };
    let mut options = vec![
        "-nographic".to_string(),
        "-net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user".into(),
        format!("-m {}", board.memory_mib),
        "-monitor none".into(),
    ];
    for (key, flag) in [("cpu", "-cpu"), ("machine", "-machine")] {
        if let Some(v) = l.context.get(key).and_then(Value::as_str) {
            options.push(format!("{flag} {v}"));
        }
    }
    json!({
        "constants": {
            "posix": {"lava_test_sh_cmd": "/bin/sh", "lava_test_results_dir": "/lava-%s", "lava_test_shell_file": "~/.bashrc"},
            "kernel-start-message": "Linux version [0-9]",
            "default-shell-prompt": "lava-test: # ",
            "spawn_maxread": "4092",
            "failure_retry": 1,
            "boot_retry": null,
            "shutdown-message": "The system is going down for reboot NOW",
        },
        "parameters": {},
        "available_architectures": [l.arch],
        "actions": {
            "deploy": {"connections": {"serial": null}, "methods": {"image": null}},
            "boot": {"connections": {"serial": null}, "methods": {"qemu": {"parameters": {"command": q.binary, "options": options, "extra": l.extra_options}}}},
        },
        "timeouts": {"actions": {}, "connections": {}},
    })
}

/// Python's `re` syntax: the nonce is hex, the rest literal.
fn re_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == ' ' || c == '=' { c.to_string() } else { format!("\\{c}") }).collect()
}

pub struct Images {
    pub kernel: String,
    pub ramdisk: String,
    pub dtb: Option<String>,
}

/// The job: deploy to tmpfs, boot with qemu, and one `monitors:` test that
/// turns this boot's marker into `kmatrix/kmatrix_boot: pass` and a panic
/// into `kmatrix/kernel_panic: fail`.
pub fn job(name: &str, board: &Board, l: &Lava, images: &Images, append: &str, nonce: &str, timeout: Duration) -> Value {
    let mut imgs = serde_json::Map::new();
    imgs.insert("kernel".into(), json!({"image_arg": format!("-kernel {{kernel}} -append \"{append}\""), "url": images.kernel}));
    imgs.insert("ramdisk".into(), json!({"image_arg": "-initrd {ramdisk}", "url": images.ramdisk}));
    if let Some(d) = &images.dtb {
        imgs.insert("dtb".into(), json!({"image_arg": "-dtb {dtb}", "url": d}));
    }
    let secs = timeout.as_secs().max(30);
    let ok = format!("-OK nonce={nonce}");
    json!({
        "device_type": "qemu",
        "job_name": name,
        "timeouts": {"job": {"seconds": secs + 120}, "action": {"seconds": secs}, "connection": {"seconds": 60}},
        "priority": "medium",
        "visibility": "public",
        "context": context(board, l),
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": {"seconds": 60}, "images": imgs}},
            {"boot": {"method": "qemu", "media": "tmpfs", "timeout": {"seconds": 60}}},
            {"test": {"timeout": {"seconds": secs}, "monitors": [{
                "name": "kmatrix",
                "start": "Linux version",
                "end": format!("KMATRIX-DONE nonce={nonce}"),
                "pattern": format!("(?P<test_case_id>KMATRIX-BOOT|Kernel panic)(?P<result>{}| - not syncing)", re_escape(&ok)),
                "fixupdict": {ok: "pass", " - not syncing": "fail"},
            }]}},
        ],
    })
}

fn file_url(mode: &Mode, out_files: &Path, p: &Path) -> String {
    match &mode.base_url {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), p.strip_prefix(out_files).unwrap_or(p).display()),
        None => format!("file://{}", p.display()),
    }
}

fn bring(src: &Path, dst: &Path) -> Result<()> {
    let _ = std::fs::remove_file(dst);
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).map_err(Error::io(format!("cannot copy {} to {}", src.display(), dst.display())))?;
    }
    Ok(())
}

/// What lava-run's log (JSON lines on stderr) says of the boot.
#[derive(Debug, Default)]
pub struct Log {
    pub console: String,
    pub marker: bool,
    pub panic: bool,
    /// The `lava/job` case: result, error_type, error_msg.
    pub job: Option<(String, Option<String>, Option<String>)>,
    pub monitoring_started: bool,
}

pub fn parse(log: &str) -> Log {
    let mut l = Log::default();
    for line in log.lines() {
        // Some lines carry YAML tags (file-download); none of those matter here.
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        match v["lvl"].as_str() {
            Some("target") => {
                if let Some(m) = v["msg"].as_str() {
                    l.console.push_str(m);
                    l.console.push('\n');
                }
            }
            Some("info") if v["msg"].as_str().is_some_and(|m| m.contains("start string found")) => l.monitoring_started = true,
            Some("results") => {
                let m = &v["msg"];
                match (m["definition"].as_str(), m["case"].as_str()) {
                    (Some("kmatrix"), Some("kmatrix_boot")) => l.marker |= m["result"] == "pass",
                    (Some("kmatrix"), Some("kernel_panic")) => l.panic = true,
                    (Some("lava"), Some("job")) => {
                        let s = |k: &str| m[k].as_str().map(str::to_string);
                        l.job = Some((s("result").unwrap_or_default(), s("error_type"), s("error_msg")));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    l
}

/// The verdict of a lava-run: only kmatrix's own test cases decide pass
/// and panic (a failed case still lets lava-run exit 0, and a panic with
/// panic=-1 ends as LAVA's "Infrastructure: Connection closed").
pub fn judge(l: &Log, exit_code: i32) -> Outcome {
    let panic_line = || l.console.lines().find(|x| x.contains("Kernel panic - not syncing")).map(|x| x.trim().to_string());
    let job_msg = || l.job.as_ref().map(|(r, t, m)| format!("LAVA job {r}{}{}", t.as_ref().map(|t| format!(" ({t})")).unwrap_or_default(), m.as_ref().map(|m| format!(": {m}")).unwrap_or_default()));
    if l.job.is_none() || !(exit_code == 0 || exit_code == 1) {
        return Outcome { verdict: Verdict::InfraError, detail: Some(job_msg().unwrap_or_else(|| format!("lava-run exited {exit_code} without a job result"))) };
    }
    if l.panic {
        return Outcome { verdict: Verdict::Panic, detail: panic_line().or_else(job_msg) };
    }
    let (result, kind, msg) = l.job.clone().unwrap_or_default();
    if result == "pass" && l.marker {
        return Outcome::pass();
    }
    if kind.as_deref() == Some("Test") && msg.as_deref().is_some_and(|m| m.contains("timed out")) {
        return Outcome { verdict: Verdict::Timeout, detail: job_msg() };
    }
    if l.monitoring_started || l.console.contains("Linux version") {
        return Outcome { verdict: Verdict::BootFail, detail: Some(format!("no boot marker; {}", job_msg().unwrap_or_default())) };
    }
    Outcome { verdict: Verdict::InfraError, detail: job_msg() }
}

/// Writes (and with `mode.run` runs) the LAVA job of a prepared cell.
/// `argv` is the QEMU command kmatrix would have run: its -append, -initrd
/// and -dtb are what the job deploys.
#[allow(clippy::too_many_arguments)]
pub fn boot_cell(mode: &Mode, board: &Board, cell: &str, name: &str, image: &Path, argv: &[String], nonce: &str, timeout: Duration, log: &Path) -> Result<BootResult> {
    let l = of(board).map_err(|why| Error::Usage(format!("{}: cannot run on LAVA: {why}", board.id)))?;
    let files = mode.out.join("files");
    let dir = files.join(cell);
    for d in [&dir, &mode.out.join("jobs"), &mode.out.join("devices")] {
        std::fs::create_dir_all(d).map_err(Error::io(format!("cannot create {}", d.display())))?;
    }
    let img = dir.join(image.file_name().unwrap_or_default());
    bring(image, &img)?;
    let initrd = after(argv, "-initrd").ok_or_else(|| Error::Infra(format!("{}: the boot has no -initrd to deploy", board.id)))?;
    let ramdisk = dir.join("initramfs.cpio.gz");
    bring(Path::new(initrd), &ramdisk)?;
    let dtb = match after(argv, "-dtb") {
        Some(d) => {
            let p = dir.join(Path::new(d).file_name().unwrap_or_default());
            bring(Path::new(d), &p)?;
            Some(file_url(mode, &files, &p))
        }
        None => None,
    };
    let images = Images { kernel: file_url(mode, &files, &img), ramdisk: file_url(mode, &files, &ramdisk), dtb };
    let append = after(argv, "-append").unwrap_or(&board.cmdline).to_string();
    let job_file = mode.out.join("jobs").join(format!("{cell}.yaml"));
    let dev_file = mode.out.join("devices").join(format!("{}.yaml", board.id));
    crate::cache::write_atomic(&job_file, super::yaml(&job(name, board, l, &images, &append, nonce, timeout)).as_bytes())?;
    crate::cache::write_atomic(&dev_file, super::yaml(&device(board, l)).as_bytes())?;
    let mut r = BootResult {
        outcome: Outcome { verdict: Verdict::Skip, detail: Some(format!("LAVA job written: {}", job_file.display())) },
        boot_to_marker: None,
        total: Duration::ZERO,
        log: log.to_path_buf(),
        cmds: Vec::new(),
        warnings: Vec::new(),
        exit_status: None,
        uname: None,
        login_at: None,
        ssh_at: None,
        system_state: None,
        dumped: None,
        console_bytes: 0,
        log_cut: false,
    };
    if !mode.run {
        return Ok(r);
    }
    if crate::host::which("lava-run").is_none() {
        return Err(Error::MissingTool { tool: "lava-run".into(), package: Some("lava-dispatcher".into()) });
    }
    // lava-run keeps its images under /var/lib/lava/dispatcher/tmp/<id>:
    // one id per cell, so parallel boots never share a directory.
    let id = u32::from_str_radix(&cell.chars().filter(char::is_ascii_hexdigit).take(7).collect::<String>(), 16).unwrap_or(1).max(1);
    let out = mode.out.join("runs").join(cell);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(Error::io(format!("cannot create {}", out.display())))?;
    let mut c = std::process::Command::new("lava-run");
    c.arg("--job-id").arg(id.to_string()).arg("--output-dir").arg(&out).arg("--device").arg(&dev_file).arg(&job_file);
    let t0 = Instant::now();
    let o = crate::process::output(c, "lava-run").map_err(|e| e.with_package("lava-dispatcher"))?;
    r.total = t0.elapsed();
    let text = String::from_utf8_lossy(&o.stderr).to_string();
    crate::cache::write_atomic(&out.join("lava.log"), text.as_bytes())?;
    if text.contains("lava-run should be executed as root") {
        return Err(Error::Infra("lava-run must run as root (it deploys into /var/lib/lava/dispatcher)".into()));
    }
    let parsed = parse(&text);
    if let Some(p) = log.parent() {
        std::fs::create_dir_all(p).map_err(Error::io(format!("cannot create {}", p.display())))?;
    }
    crate::cache::write_atomic(log, parsed.console.as_bytes())?;
    r.console_bytes = parsed.console.len() as u64;
    r.outcome = judge(&parsed, o.code);
    r.exit_status = Some(o.code);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(v: Value) -> String {
        v.to_string()
    }

    #[test]
    fn judge_reads_kmatrix_cases_not_the_exit_code() {
        let target = |m: &str| line(json!({"lvl": "target", "msg": m}));
        let case = |def: &str, c: &str, r: &str| line(json!({"lvl": "results", "msg": {"definition": def, "case": c, "result": r}}));
        let job_fail = |t: &str, m: &str| line(json!({"lvl": "results", "msg": {"definition": "lava", "case": "job", "result": "fail", "error_type": t, "error_msg": m}}));
        let pass = [target("Linux version 6.1"), target("KMATRIX-BOOT-OK nonce=ab"), case("kmatrix", "kmatrix_boot", "pass"), case("lava", "job", "pass")].join("\n");
        assert_eq!(judge(&parse(&pass), 0).verdict, Verdict::Pass);
        // The job passed but the marker case did not: not a pass.
        let no_marker = [target("Linux version 6.1"), case("lava", "job", "pass")].join("\n");
        assert_eq!(judge(&parse(&no_marker), 0).verdict, Verdict::BootFail);
        let panic = [target("Linux version 6.1"), target("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs"), case("kmatrix", "kernel_panic", "fail"), job_fail("Infrastructure", "Connection closed")].join("\n");
        let o = judge(&parse(&panic), 1);
        assert_eq!(o.verdict, Verdict::Panic);
        assert_eq!(o.detail.as_deref(), Some("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs"));
        let hang = [target("Linux version 6.1"), job_fail("Test", "lava-test-monitor timed out after 20 seconds")].join("\n");
        assert_eq!(judge(&parse(&hang), 1).verdict, Verdict::Timeout);
        let bad = job_fail("Job", "Invalid job data: kernel does not exist");
        assert_eq!(judge(&parse(&bad), 1).verdict, Verdict::InfraError);
        assert_eq!(judge(&parse("not json\n"), 2).verdict, Verdict::InfraError);
    }
}
