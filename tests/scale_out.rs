//! Plans handed out in parts and joined again: `plan --out`, `run --plan`
//! (--shard, --cell, --build then --boot) and `merge`, on the fake kernel
//! tree and the fake emulator (seconds). The engines that run the parts
//! (Slurm, LAVA, ...) have their own tests in tests/engines.rs.

mod common;
use common::fake::{stderr, stdout, toml_str, FakeProject};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Four cells on two builds: fake-pc passes, fake-panic panics, each on two
/// kernels (the same tarball under two names).
fn project() -> FakeProject {
    let p = FakeProject::new();
    p.add_board("fake-panic", &["fake.boot=panic"]);
    // The same tree with one more file: another tarball, another build.
    let b = p.path().join("fake-linux-b.tar.gz");
    let tree = p.path().join("tree-b");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg("mkdir -p \"$2\" && tar -xzf \"$1\" -C \"$2\" && echo b > \"$2\"/fake-linux/B && tar -czf \"$3\" -C \"$2\" fake-linux")
        .args(["sh", s(&p.tarball), s(&tree), s(&b)])
        .status()
        .unwrap();
    assert!(st.success());
    p.write_matrix(&format!(
        "boards = [\"fake-pc\", \"fake-panic\"]\ntoolchains = [\"gcc\"]\nkernels = [\"fake\", \"fake-b\"]\nconfigs = [\"tiny\"]\n\n\
         [kernel.fake]\nversion = \"6.1\"\npath = {}\n\n\
         [kernel.fake-b]\nversion = \"6.1\"\npath = {}\n\n\
         [config.tiny]\ndescription = \"tinyconfig + the board's fragment\"\n",
        p.tarball_toml(),
        toml_str(&b.display().to_string())
    ));
    p
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// (cell id → verdict), in file order.
fn verdicts(dir: &Path) -> Vec<(String, String)> {
    let r = json(&dir.join("results.json"));
    r["cells"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap().to_string(), c["verdict"].as_str().unwrap().to_string())).collect()
}

fn run(p: &FakeProject, args: &[&str]) -> (Option<i32>, String) {
    let out = p.kmatrix(args);
    (out.status.code(), format!("{}{}", stdout(&out), stderr(&out)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn shards_in_any_order_merge_to_what_one_sweep_writes() {
    let p = project();
    let plan = p.path().join("plan.json");
    let (code, text) = run(&p, &["plan", "--out", s(&plan)]);
    assert_eq!(code, Some(0), "{text}");
    let pj = json(&plan);
    assert_eq!(pj["cells"].as_array().unwrap().len(), 4, "{pj:#}");
    assert_eq!(pj["builds"].as_array().unwrap().len(), 2, "{pj:#}");
    assert!(pj["sources"]["fake"].as_str().unwrap().starts_with("sha256:"), "{pj:#}");
    let id = pj["id"].as_str().unwrap().to_string();

    // Each shard holds one whole build: each kernel is built once.
    let (s1, s2) = (p.path().join("s1"), p.path().join("s2"));
    for (i, d) in [(1, &s1), (2, &s2)] {
        let shard = format!("{i}/2");
        let (code, text) = run(&p, &["run", "--plan", s(&plan), "--shard", &shard, "--results-dir", s(d)]);
        assert_eq!(code, Some(1), "a panic cell is a kernel failure:\n{text}");
        let r = json(&d.join("results.json"));
        assert_eq!(r["plan"], id.as_str());
        assert_eq!(r["cells"].as_array().unwrap().len(), 2, "{r:#}");
        let builds: std::collections::BTreeSet<&str> = r["cells"].as_array().unwrap().iter().map(|c| c["build"].as_str().unwrap()).collect();
        assert_eq!(builds.len(), 1, "{r:#}");
    }
    assert_eq!(p.build_lines().len(), 2, "{:#?}", p.make_log());

    let whole = p.path().join("whole");
    let (code, text) = run(&p, &["sweep", "--results-dir", s(&whole)]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(json(&whole.join("results.json"))["plan"], id.as_str(), "a sweep of the same matrix is the same plan");

    // A socket or a link left in a cell's run directory (a QMP socket of a
    // killed run) is no record: the merge passes over it.
    let c0 = &json(&s1.join("results.json"))["cells"][0];
    let logs = s1.join("runs").join(c0["id"].as_str().unwrap());
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("kept.txt"), "a record").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(logs.join("qmp.sock")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", logs.join("dangling")).unwrap();

    let (m1, m2) = (p.path().join("m1"), p.path().join("m2"));
    let (code, text) = run(&p, &["merge", s(&s2), s(&s1), "--into", s(&m1)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("merged 2 parts: 4 cells"), "{text}");
    let (code, _) = run(&p, &["merge", s(&s1), s(&s2), "--into", s(&m2)]);
    assert_eq!(code, Some(1));
    assert_eq!(verdicts(&m1), verdicts(&whole), "merged in one order");
    assert_eq!(verdicts(&m2), verdicts(&whole), "merged in the other");
    let v = verdicts(&m1);
    assert_eq!(v.iter().filter(|(_, v)| v == "pass").count(), 2, "{v:?}");
    assert_eq!(v.iter().filter(|(_, v)| v == "panic").count(), 2, "{v:?}");
    let m = json(&m1.join("results.json"));
    assert_eq!(m["complete"], true);
    assert!(m.get("notes").is_none(), "{m:#}");
    assert_eq!(m["builds"].as_array().unwrap().len(), 2, "{m:#}");
    let rel = logs.strip_prefix(&s1).unwrap();
    assert!(m1.join(rel).join("kept.txt").is_file(), "the run directory came along");
    assert!(std::fs::symlink_metadata(m1.join(rel).join("qmp.sock")).is_err(), "a socket was merged");
    assert!(std::fs::symlink_metadata(m1.join(rel).join("dangling")).is_err(), "a link was merged");
    // Every log a cell names came along.
    for c in m["cells"].as_array().unwrap() {
        for k in ["console_log", "build_log"] {
            let rel = c[k].as_str().unwrap_or_else(|| panic!("no {k}: {c}"));
            assert!(m1.join(rel).is_file(), "{rel} missing from the merge");
        }
    }
    // The merge renders as any results directory does.
    let (code, text) = run(&p, &["report", s(&m1), "--format", "json"]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_duplicated_shard_keeps_the_later_result_and_says_so_and_a_missing_one_is_incomplete() {
    let p = project();
    let plan = p.path().join("plan.json");
    assert_eq!(run(&p, &["plan", "--out", s(&plan)]).0, Some(0));
    let (s1, s2, again) = (p.path().join("s1"), p.path().join("s2"), p.path().join("s1-retry"));
    for (shard, d) in [("1/2", &s1), ("2/2", &s2), ("1/2", &again)] {
        let (code, text) = run(&p, &["run", "--plan", s(&plan), "--shard", shard, "--results-dir", s(d)]);
        assert_eq!(code, Some(1), "{text}");
    }
    let out = p.path().join("m");
    let (code, text) = run(&p, &["merge", s(&again), s(&s1), s(&s2), "--into", s(&out)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("merged 3 parts: 4 cells"), "{text}");
    let m = json(&out.join("results.json"));
    let notes = m["notes"].as_array().unwrap_or_else(|| panic!("no notes: {m:#}"));
    assert_eq!(notes.len(), 2, "one note per cell run twice: {notes:#?}");
    for n in notes {
        let n = n.as_str().unwrap();
        assert!(n.contains("s1-retry") && n.contains("finished later"), "{n}");
    }
    assert_eq!(m["cells"].as_array().unwrap().len(), 4, "no duplicates: {m:#}");

    // Shard 2 lost: the merge says which cells are missing, and fails as
    // infrastructure (exit 2), not as a kernel failure.
    let part = p.path().join("partial");
    let (code, text) = run(&p, &["merge", s(&s1), "--into", s(&part)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("INCOMPLETE: 2 planned cells have no result"), "{text}");
    let shard2: Vec<(String, String)> = verdicts(&s2);
    for (id, _) in &shard2 {
        assert!(text.contains(id.as_str()), "missing cell {id} not named:\n{text}");
    }
    assert_eq!(json(&part.join("results.json"))["complete"], false);
}

#[test]
fn results_of_another_plan_are_refused_and_so_is_a_plan_this_checkout_no_longer_makes() {
    let p = project();
    let plan = p.path().join("plan.json");
    assert_eq!(run(&p, &["plan", "--out", s(&plan)]).0, Some(0));
    let a = p.path().join("a");
    assert_eq!(run(&p, &["run", "--plan", s(&plan), "--shard", "1/2", "--results-dir", s(&a)]).0, Some(1));
    // Another plan: the same matrix, filtered.
    let other = p.path().join("other.json");
    assert_eq!(run(&p, &["plan", "--filter", "board=fake-pc", "--out", s(&other)]).0, Some(0));
    let b = p.path().join("b");
    let (code, text) = run(&p, &["run", "--plan", s(&other), "--results-dir", s(&b)]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&p, &["merge", s(&a), s(&b), "--into", s(&p.path().join("m"))]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("results of different plans cannot be merged"), "{text}");
    assert!(!p.path().join("m/results.json").exists());
    // A results directory of one plan does not take another's part.
    let (code, text) = run(&p, &["run", "--plan", s(&other), "--results-dir", s(&a)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("holds results of plan"), "{text}");

    // The descriptors changed after the plan was written: refused, with why.
    let board = std::fs::read_to_string(p.path().join("boards/fake-panic.toml")).unwrap();
    std::fs::write(p.path().join("boards/fake-panic.toml"), board.replace("fake.boot=panic", "fake.boot=panic quiet")).unwrap();
    let (code, text) = run(&p, &["run", "--plan", s(&plan), "--shard", "2/2", "--results-dir", s(&p.path().join("c"))]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("of its cells are not planned here"), "{text}");
    // Bad selections are usage errors, not panics.
    for (args, want) in [
        (vec!["--shard", "3/2"], "expected I/N"),
        (vec!["--shard", "0/2"], "expected I/N"),
        (vec!["--cell", "nope"], "no cell `nope`"),
        (vec!["--build", "9"], "build index 9"),
    ] {
        let mut all = vec!["run", "--plan", s(&other), "--results-dir", "x"];
        all.extend(args);
        let (code, text) = run(&p, &all);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(want), "{want}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn a_build_alone_then_its_boots_in_the_same_directory_build_once() {
    let p = project();
    let plan = p.path().join("plan.json");
    assert_eq!(run(&p, &["plan", "--out", s(&plan)]).0, Some(0));
    let pj = json(&plan);
    let mut dirs = Vec::new();
    let mut cells: BTreeMap<String, usize> = BTreeMap::new();
    for (i, b) in pj["builds"].as_array().unwrap().iter().enumerate() {
        let d = p.path().join(format!("b{}", i + 1));
        let index = (i + 1).to_string();
        let boots = p.qemu_log().len();
        let (code, text) = run(&p, &["run", "--plan", s(&plan), "--build", &index, "--results-dir", s(&d)]);
        assert_eq!(code, Some(0), "{text}");
        let r = json(&d.join("results.json"));
        assert_eq!(r["cells"].as_array().unwrap().len(), 0, "build only boots nothing: {r:#}");
        assert_eq!(r["builds"][0]["id"], b["id"], "{r:#}");
        assert_eq!(r["builds"][0]["ok"], true, "{r:#}");
        assert_eq!(p.qemu_log().len(), boots, "{:#?}", p.qemu_log());
        // By id this time.
        let (code, text) = run(&p, &["run", "--plan", s(&plan), "--build", b["id"].as_str().unwrap(), "--boot", "--results-dir", s(&d)]);
        assert_eq!(code, Some(1), "{text}");
        cells.insert(b["id"].as_str().unwrap().to_string(), verdicts(&d).len());
        dirs.push(d);
    }
    assert_eq!(p.build_lines().len(), 2, "each kernel built once: {:#?}", p.make_log());
    assert!(cells.values().all(|n| *n == 2), "{cells:?}");
    let out = p.path().join("m");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(|d| s(d)));
    args.extend(["--into", s(&out)]);
    let (code, text) = run(&p, &args);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(json(&out.join("results.json"))["complete"], true);
}

#[test]
fn kcidb_report_submits_with_a_bearer_token_to_a_loopback_server() {
    use std::io::{Read, Write};
    let p = project();
    let res = p.path().join("r");
    assert_eq!(run(&p, &["sweep", "--results-dir", s(&res)]).0, Some(1));
    let (code, text) = run(&p, &["report", s(&res), "--format", "kcidb"]);
    assert_eq!(code, Some(0), "{text}");
    let doc: Value = serde_json::from_str(text.split("\n[").next().unwrap_or(&text)).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc["version"]["major"], 5);
    assert_eq!(doc["tests"].as_array().unwrap().len(), 4);
    let statuses: Vec<&str> = doc["tests"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "FAIL").count(), 2, "panics are FAIL: {statuses:?}");
    let (code, text) = run(&p, &["report", s(&res), "--format", "kcidb", "--origin", "Bad-Origin"]);
    assert_eq!(code, Some(2), "{text}");

    // One request, answered 200; what it carried comes back over a channel.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let n = conn.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).unwrap_or(0);
                if body.len() >= len {
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").unwrap();
                    tx.send(text).unwrap();
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}/submit");
    let out = {
        let mut c = assert_cmd::Command::cargo_bin("kmatrix").unwrap();
        c.current_dir(p.path()).env("KMATRIX_CACHE_DIR", &p.cache).env("KCIDB_TOKEN", "s3cret").args(["report", s(&res), "--format", "kcidb", "--submit", &url]);
        c.timeout(std::time::Duration::from_secs(60)).output().unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("submitted 2 builds and 4 tests"), "{}", stdout(&out));
    let req = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(req.starts_with("POST /submit "), "{req}");
    assert!(req.to_ascii_lowercase().contains("authorization: bearer s3cret"), "{req}");
    let body: Value = serde_json::from_str(req.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["tests"].as_array().unwrap().len(), 4);
    // No token, no submission; a token is never sent in the clear off-host.
    let (code, text) = run(&p, &["report", s(&res), "--format", "kcidb", "--submit", &url]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("KCIDB_TOKEN"), "{text}");
}
