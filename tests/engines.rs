//! The engines, run for real on this machine: a one-node Slurm cluster
//! (tests/engines/slurm-cluster.sh) running a plan of the shared real
//! kernels, LAVA's dispatcher booting kmatrix's jobs, kcidb-io validating
//! the KCIDB export, kubernetes-validate and check-jsonschema the
//! Kubernetes Job and the GitHub workflow. Real tier: they need root,
//! slurm-wlm, munge, lava-dispatcher and a Python venv with kcidb-io,
//! kubernetes-validate and check-jsonschema (KMATRIX_TEST_VENV; .ci/run
//! makes one). Where the tier runs, a missing tool fails the test.

mod common;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const REAL: &str = "needs root, real kernels, QEMU, slurm-wlm, munge, lava-dispatcher and KMATRIX_TEST_VENV: set KMATRIX_TEST_REAL=1 (CI does)";

/// The shared real kernels (tests/common) as a matrix: one cell per QEMU
/// machine on the kernel the real tier builds anyway, the gem5 boards
/// skipping where gem5 is not built.
fn shared_kernels_matrix() -> String {
    let mut m = String::from(
        "boards = [\"qemu-x86_64-pc\", \"qemu-aarch64-virt\", \"qemu-arm-versatilepb\", \"qemu-mips64-malta\", \"qemu-mips64el-malta\", \"gem5-arm\", \"gem5-x86\"]\n\
         toolchains = [\"gcc\", \"clang\"]\nkernels = [\"debian-6.1\", \"debian-6.12\"]\nconfigs = [\"debug\"]\n\
         [kernel.\"debian-6.1\"]\nversion = \"6.1\"\n[kernel.\"debian-6.12\"]\nversion = \"6.12\"\n[config.debug]\nprofile = \"debug\"\n",
    );
    for board in ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta", "gem5-*"] {
        let (toolchain, kernel) = if board == "qemu-arm-versatilepb" { ("gcc", "debian-6.1") } else { ("clang", "debian-6.12") };
        m += &format!("[[exclude]]\nboard = \"{board}\"\ntoolchain = \"{toolchain}\"\n[[exclude]]\nboard = \"{board}\"\nkernel = \"{kernel}\"\n");
    }
    m
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn verdicts(dir: &Path) -> Vec<(String, String, String)> {
    let r = json(&dir.join("results.json"));
    r["cells"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap().into(), c["board"].as_str().unwrap().into(), c["verdict"].as_str().unwrap().into())).collect()
}

/// The venv with kcidb-io, kubernetes-validate and check-jsonschema.
fn venv() -> PathBuf {
    let v = PathBuf::from(std::env::var_os("KMATRIX_TEST_VENV").expect("KMATRIX_TEST_VENV: a venv with kcidb-io, kubernetes-validate and check-jsonschema (.ci/run makes one)"));
    assert!(v.join("bin/python").is_file(), "{}: not a venv", v.display());
    v
}

fn run(cmd: &mut Command) -> (i32, String) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (o.status.code().unwrap_or(-1), text(&o))
}

/// kcidb-io's own schema (v5.3) with its format checks; every error listed.
fn kcidb_validate(file: &Path) {
    let script = "import json, sys, jsonschema, kcidb_io\n\
        d = json.load(open(sys.argv[1]))\n\
        v = jsonschema.Draft7Validator(kcidb_io.schema.LATEST.json, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)\n\
        errs = ['/'.join(map(str, e.path)) + ': ' + e.message for e in v.iter_errors(d)]\n\
        print('\\n'.join(errs))\n\
        kcidb_io.schema.LATEST.validate(d)\n\
        print('valid', len(d['builds']), 'builds', len(d['tests']), 'tests')\n";
    let (code, out) = run(Command::new(venv().join("bin/python")).arg("-c").arg(script).arg(file));
    assert_eq!(code, 0, "kcidb-io rejects {}:\n{out}", file.display());
    eprintln!("kcidb-io: {out}");
}

struct Cluster {
    dir: tempfile::TempDir,
    conf: String,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::Builder::new().prefix("kmatrix-slurm-").tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/engines/slurm-cluster.sh");
        let (code, out) = run(Command::new("bash").arg(script).arg("up").arg(dir.path()));
        let conf = out.lines().rev().find_map(|l| l.strip_prefix("export SLURM_CONF=")).map(str::to_string);
        let c = Cluster { dir, conf: conf.clone().unwrap_or_default() };
        assert!(code == 0 && conf.is_some(), "the one-node Slurm cluster did not come up:\n{out}");
        eprintln!("{out}");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/engines/slurm-cluster.sh");
        let (code, out) = run(Command::new("bash").arg(script).arg("down").arg(self.dir.path()));
        eprintln!("slurm-cluster.sh down: exit {code}\n{out}");
    }
}

fn kmatrix_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kmatrix"));
    c.current_dir(dir).env("KMATRIX_CACHE_DIR", common::cache()).env("CI", "1").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let (code, out) = run(&mut c);
    eprintln!("$ kmatrix {}\n[exit {code}]\n{out}", args.join(" "));
    (code, out)
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs root, real kernels, QEMU, slurm-wlm, munge, lava-dispatcher and KMATRIX_TEST_VENV: set KMATRIX_TEST_REAL=1 (CI does)")]
fn slurm_runs_the_plan_as_job_arrays_and_the_merge_equals_a_local_sweep() {
    let _ = REAL;
    for arch in ["x86_64", "aarch64", "arm", "mips64", "mips64el"] {
        common::build_shared(arch);
    }
    let _g = common::exclusive("real-sweep");
    let proj = tempfile::tempdir().unwrap();
    std::fs::write(proj.path().join("matrix.toml"), shared_kernels_matrix()).unwrap();
    let plan = proj.path().join("plan.json");
    let p = plan.to_str().unwrap();
    let (code, out) = kmatrix_env(proj.path(), &["plan", "--out", p], &[]);
    assert_eq!(code, 0, "{out}");

    let cluster = Cluster::up();
    let out_dir = proj.path().join("slurm");
    let t = std::time::Instant::now();
    let conf = [("SLURM_CONF", cluster.conf.as_str())];
    let (code, out) = kmatrix_env(proj.path(), &["export", "slurm", "--plan", p, "--out", out_dir.to_str().unwrap(), "--submit", "--wait"], &conf);
    let slurm_secs = t.elapsed().as_secs_f64();
    for f in std::fs::read_dir(out_dir.join("slurm")).into_iter().flatten().flatten() {
        eprintln!("--- {}\n{}", f.path().display(), std::fs::read_to_string(f.path()).unwrap_or_default());
    }
    assert_eq!(code, 0, "the merge job's exit code is the matrix's:\n{out}");
    assert!(out.contains("submitted build array"), "{out}");
    let merged = out_dir.join("merged");
    let m = json(&merged.join("results.json"));
    assert_eq!(m["complete"], true, "{m:#}");
    assert_eq!(m["plan"], json(&plan)["id"]);
    // One task per build: parts/build-1 .. build-N, each with its build's cells.
    let builds = json(&plan)["builds"].as_array().unwrap().len();
    let parts = std::fs::read_dir(out_dir.join("parts")).unwrap().count();
    assert_eq!(parts, builds, "one part per build task");

    let local = proj.path().join("local");
    let t = std::time::Instant::now();
    let (code, out) = kmatrix_env(proj.path(), &["sweep", "--results-dir", local.to_str().unwrap()], &[]);
    let local_secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}");
    assert_eq!(json(&local.join("results.json"))["plan"], m["plan"], "the local sweep is the same plan");
    assert_eq!(verdicts(&merged), verdicts(&local), "Slurm's merged cells and verdicts are a local sweep's");
    let v = verdicts(&merged);
    assert_eq!(v.iter().filter(|c| c.2 == "pass").count(), 5, "{v:?}");
    eprintln!("through Slurm: {slurm_secs:.1}s (submit to merged); local sweep: {local_secs:.1}s; {} cells", v.len());

    // The merged run in KCIDB, validated by kcidb-io.
    let (code, doc) = kmatrix_env(proj.path(), &["report", merged.to_str().unwrap(), "--format", "kcidb"], &[]);
    assert_eq!(code, 0, "{doc}");
    let k = proj.path().join("kcidb.json");
    std::fs::write(&k, &doc).unwrap();
    kcidb_validate(&k);
    let d: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(d["tests"].as_array().unwrap().len(), v.len());
    assert!(d["tests"].as_array().unwrap().iter().all(|t| t["id"].as_str().unwrap().starts_with("kmatrix:")));
}

/// A project board like the shipped pc whose kernel panics: no init.
fn panicking_pc(proj: &Path) {
    let board = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/boards/qemu-x86_64-pc.toml")).unwrap();
    let line = board.lines().find(|l| l.starts_with("cmdline = ")).unwrap();
    let panicking = board.replace(line, &line.replace("panic=-1\"", "panic=-1 rdinit=/ init=/nonexistent\""));
    assert_ne!(board, panicking);
    std::fs::create_dir_all(proj.join("boards")).unwrap();
    std::fs::write(proj.join("boards/qemu-x86_64-pc-panics.toml"), panicking.replace("description = \"", "description = \"(panics) ")).unwrap();
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs root, real kernels, QEMU, slurm-wlm, munge, lava-dispatcher and KMATRIX_TEST_VENV: set KMATRIX_TEST_REAL=1 (CI does)")]
fn lava_run_boots_the_exported_jobs_a_pass_is_a_pass_and_a_panic_is_a_panic() {
    common::build_shared("x86_64");
    let proj = tempfile::tempdir().unwrap();
    panicking_pc(proj.path());
    std::fs::write(
        proj.path().join("matrix.toml"),
        "boards = [\"qemu-x86_64-pc\", \"qemu-x86_64-pc-panics\", \"qemu-mips64el-malta\"]\ntoolchains = [\"gcc\"]\nkernels = [\"debian-6.1\"]\nconfigs = [\"debug\"]\n\n[kernel.\"debian-6.1\"]\nversion = \"6.1\"\n\n[config.debug]\nprofile = \"debug\"\n",
    )
    .unwrap();
    let plan = proj.path().join("plan.json");
    let p = plan.to_str().unwrap();
    assert_eq!(kmatrix_env(proj.path(), &["plan", "--filter", "board=qemu-x86_64-*", "--out", p], &[]).0, 0);

    // The jobs, as a lab would get them, pass lava-common's own schema.
    let export = proj.path().join("export");
    let (code, out) = kmatrix_env(proj.path(), &["export", "lava", "--plan", p, "--out", export.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 LAVA jobs in"), "{out}");
    let jobs: Vec<PathBuf> = std::fs::read_dir(export.join("jobs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        let (code, out) = run(Command::new("/usr/bin/python3")
            .arg("-c")
            .arg("import sys, yaml\nfrom lava_common.schemas import validate\nvalidate(yaml.safe_load(open(sys.argv[1])), strict=True)\nprint('valid')")
            .arg(j));
        assert_eq!(code, 0, "lava-common rejects {}:\n{out}\n{}", j.display(), std::fs::read_to_string(j).unwrap());
    }

    // Booted through lava-run, read back into results.
    let res = proj.path().join("results");
    let lava = proj.path().join("lava");
    let (code, out) = kmatrix_env(proj.path(), &["run", "--plan", p, "--lava", lava.to_str().unwrap(), "--retries", "0", "--results-dir", res.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "a panic is a kernel failure:\n{out}");
    let v = verdicts(&res);
    let of = |b: &str| v.iter().find(|c| c.1 == b).map(|c| c.2.clone()).unwrap_or_else(|| panic!("no {b}: {v:?}"));
    assert_eq!(of("qemu-x86_64-pc"), "pass", "{out}");
    assert_eq!(of("qemu-x86_64-pc-panics"), "panic", "{out}");
    let r = json(&res.join("results.json"));
    let panicked = r["cells"].as_array().unwrap().iter().find(|c| c["board"] == "qemu-x86_64-pc-panics").unwrap();
    assert!(panicked["detail"].as_str().unwrap().contains("Kernel panic - not syncing"), "{panicked}");
    // The console came back from LAVA's log.
    let log = std::fs::read_to_string(res.join(panicked["console_log"].as_str().unwrap())).unwrap();
    assert!(log.contains("Linux version 6.1"), "{log}");
    for c in r["cells"].as_array().unwrap() {
        assert!(lava.join("runs").join(c["id"].as_str().unwrap()).join("lava.log").is_file(), "{c}");
    }

    // A board LAVA has no arch for is a visible skip, not a failure.
    let all = proj.path().join("all.json");
    assert_eq!(kmatrix_env(proj.path(), &["plan", "--filter", "board=qemu-mips64el-malta", "--out", all.to_str().unwrap()], &[]).0, 0);
    let (code, out) = kmatrix_env(proj.path(), &["run", "--plan", all.to_str().unwrap(), "--lava", lava.to_str().unwrap(), "--results-dir", proj.path().join("r2").to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("LAVA cannot run board `qemu-mips64el-malta`"), "{out}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs root, real kernels, QEMU, slurm-wlm, munge, lava-dispatcher and KMATRIX_TEST_VENV: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kubernetes_job_and_github_workflow_exports_validate() {
    let proj = tempfile::tempdir().unwrap();
    std::fs::write(proj.path().join("matrix.toml"), shared_kernels_matrix()).unwrap();
    let plan = proj.path().join("plan.json");
    let p = plan.to_str().unwrap();
    assert_eq!(kmatrix_env(proj.path(), &["plan", "--out", p], &[]).0, 0);
    let builds = json(&plan)["builds"].as_array().unwrap().len();
    let job = proj.path().join("job.yaml");
    let (code, out) = kmatrix_env(proj.path(), &["export", "k8s", "--plan", p, "--image", "registry.example/kmatrix:1", "--out", job.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(Command::new(venv().join("bin/kubernetes-validate")).arg("--strict").arg(&job));
    assert_eq!(code, 0, "{out}\n{}", std::fs::read_to_string(&job).unwrap());
    assert!(out.contains("passed for resource job/kmatrix-"), "{out}");
    let y = std::fs::read_to_string(&job).unwrap();
    for want in ["completionMode: Indexed", &format!("completions: {builds}"), "backoffLimitPerIndex: 2", "action: FailIndex", "action: Count", "restartPolicy: Never"] {
        assert!(y.contains(want), "{want} not in:\n{y}");
    }

    // 600 shards: three matrices of at most 256, and a merge needing all.
    let wf = proj.path().join("kmatrix.yml");
    for shards in [None, Some("600")] {
        let mut args = vec!["export", "gha", "--plan", p, "--plan-path", "plan.json", "--out", wf.to_str().unwrap()];
        if let Some(n) = shards {
            args.extend(["--shards", n]);
        }
        let (code, out) = kmatrix_env(proj.path(), &args, &[]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = run(Command::new(venv().join("bin/check-jsonschema")).args(["--builtin-schema", "vendor.github-workflows"]).arg(&wf));
        assert_eq!(code, 0, "{out}\n{}", std::fs::read_to_string(&wf).unwrap());
    }
    let y = std::fs::read_to_string(&wf).unwrap();
    assert!(y.contains("shards-1:") && y.contains("shards-3:") && !y.contains("shards-4:"), "{y}");
    assert!(y.contains("- shards-3"), "{y}");
}
