//! The Debian package: `cargo deb` makes it from the binary this test run
//! built, and the unpacked package holds the binary, the systemd unit, a
//! commented config that the packaged binary's `check` accepts, and the
//! maintainer scripts that create the `ringlb` user.
//!
//! Needs `cargo deb` (`cargo install cargo-deb --locked`; `.ci/run` does
//! it) and `dpkg-deb`; without them the test fails and says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{bin, strip_ansi, TempDir};

fn text(out: &Output) -> String {
    strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Runs `cmd`, panicking with `missing` when the program cannot be started
/// and with its output when it fails.
fn run(cmd: &mut Command, missing: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{missing} ({e}): {cmd:?}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

/// Builds the package with `cargo deb --no-build` around the binary this
/// test run built (a debug build; its packaging is the same as a release
/// build's). The binary is put into a separate target dir as
/// `release/ringlb`, where `cargo deb` looks for it, so nothing is built
/// and the real target dir is not touched. Its debug info is stripped and
/// the system's gzip used: compressing 90 MB of debug info in process
/// takes minutes on a busy machine, the stripped binary seconds.
fn build_package(dir: &Path) -> PathBuf {
    let version = Command::new(cargo()).args(["deb", "--version"]).output();
    match version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`cargo deb` is not installed; run `cargo install cargo-deb --locked` \
             (.ci/run does it):\n{}",
            text(&out)
        ),
        Err(e) => panic!("cannot run {} ({e})", cargo()),
    }
    let target = dir.join("target");
    fs::create_dir_all(target.join("release")).unwrap();
    let staged = target.join("release/ringlb");
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&staged)
        .arg(bin())
        .status();
    if !stripped.is_ok_and(|s| s.success()) {
        fs::copy(bin(), &staged).expect("copy the built binary");
    }
    let deb = dir.join("ringlb.deb");
    run(
        Command::new(cargo())
            .args(["deb", "--no-build", "--no-strip", "--offline"])
            .args(["--fast", "--compress-system", "--compress-type", "gz"])
            .arg("--output")
            .arg(&deb)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        "cannot run cargo deb",
    );
    assert!(deb.is_file(), "cargo deb wrote no {}", deb.display());
    deb
}

#[test]
fn deb_package_holds_binary_unit_conffile_and_user_creation() {
    let dir = TempDir::new();
    let deb = build_package(dir.path());
    let root = dir.path().join("root");
    let control = dir.path().join("control");
    let no_dpkg = "cannot run dpkg-deb; install it with `apt-get install dpkg`";
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        no_dpkg,
    );
    run(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control),
        no_dpkg,
    );

    // The binary, and its `check` on the packaged config.
    let binary = root.join("usr/bin/ringlb");
    let config = root.join("etc/ringlb/ringlb.toml");
    let out = Command::new(&binary)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the packaged {}: {e}", binary.display()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the packaged binary's check refused the packaged config:\n{}",
        text(&out)
    );
    assert!(text(&out).contains(": ok"), "{}", text(&out));
    let config_text = fs::read_to_string(&config).unwrap();
    assert!(
        config_text.lines().filter(|l| l.starts_with('#')).count() >= 10,
        "the packaged config is not commented:\n{config_text}"
    );

    // The config is a conffile, so local edits survive upgrades.
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("a conffiles list");
    assert!(
        conffiles
            .lines()
            .any(|l| l.trim() == "/etc/ringlb/ringlb.toml"),
        "conffiles: {conffiles:?}"
    );

    // The unit from contrib/, unchanged, and every binary it starts is in
    // the package.
    let unit = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("ringlb.service"))
        .find(|p| p.is_file())
        .expect("ringlb.service in the package");
    let unit_text = fs::read_to_string(&unit).unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ringlb.service");
    assert_eq!(unit_text, fs::read_to_string(contrib).unwrap());
    let mut starts = 0;
    for line in unit_text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !["ExecStart", "ExecStartPre", "ExecReload"].contains(&key) {
            continue;
        }
        let program = value.split_whitespace().next().unwrap_or("");
        if program.contains("ringlb") {
            starts += 1;
            let packaged = root.join(program.trim_start_matches('/'));
            assert!(packaged.is_file(), "{line}: no {program} in the package");
            assert!(value.contains("/etc/ringlb/ringlb.toml"), "{line}");
        }
    }
    assert!(
        starts >= 2,
        "the unit starts no packaged ringlb:\n{unit_text}"
    );

    // postinst creates the user, is valid sh, and has the unit snippets.
    let postinst = fs::read_to_string(control.join("postinst")).expect("a postinst");
    assert!(
        postinst.contains("adduser --system") && postinst.contains("ringlb"),
        "postinst does not create the ringlb user:\n{postinst}"
    );
    assert!(
        postinst.contains("systemctl"),
        "no unit handling:\n{postinst}"
    );
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "unreplaced token:\n{postinst}"
    );
    run(
        Command::new("sh").arg("-n").arg(control.join("postinst")),
        "cannot run sh",
    );
    let control_text = fs::read_to_string(control.join("control")).unwrap();
    assert!(
        control_text
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains("adduser")),
        "postinst uses adduser, so the package must depend on it:\n{control_text}"
    );
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// `contrib/seccomp-io_uring.json` is a seccomp profile in Docker's format
/// that denies by default and allows the three io_uring syscalls besides
/// the ones the proxy needs to run at all. (No container runtime runs in
/// the tests; this checks the file, the README says how to use it.)
#[test]
fn seccomp_profile_allows_io_uring_and_denies_by_default() {
    let profile: serde_json::Value =
        serde_json::from_str(&repo_file("contrib/seccomp-io_uring.json"))
            .expect("contrib/seccomp-io_uring.json is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(profile["defaultErrnoRet"], 1, "EPERM, as Docker's default");
    let arches = profile["archMap"].as_array().expect("archMap");
    assert!(arches
        .iter()
        .any(|a| a["architecture"] == "SCMP_ARCH_X86_64"));
    assert!(arches
        .iter()
        .any(|a| a["architecture"] == "SCMP_ARCH_AARCH64"));
    let rules = profile["syscalls"].as_array().expect("syscalls");
    // Allowed unconditionally: no arguments, architectures or capabilities.
    let allowed: Vec<&str> = rules
        .iter()
        .filter(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r.get("args").is_none()
                && r.get("includes").is_none()
                && r.get("excludes").is_none()
        })
        .flat_map(|r| r["names"].as_array().expect("names"))
        .map(|n| n.as_str().expect("a syscall name"))
        .collect();
    for name in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "accept4",
        "bind",
        "listen",
        "connect",
        "setsockopt",
        "epoll_wait",
        "futex",
        "mmap",
        "rt_sigaction",
        "sched_setaffinity",
    ] {
        assert!(allowed.contains(&name), "{name} is not allowed");
    }
    for rule in rules {
        let action = rule["action"].as_str().expect("action");
        assert!(
            ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"].contains(&action),
            "unexpected action in {rule}"
        );
    }
}

/// The Dockerfile cannot be built in the tests (no container runtime, no
/// registry); this checks what can go wrong without one: it has two
/// stages on Debian slim, runs as a non-root user, and copies only files
/// that exist and are not excluded from the build context.
#[test]
fn dockerfile_is_multi_stage_non_root_and_copies_existing_files() {
    let dockerfile = repo_file("Dockerfile");
    let ignored: Vec<String> = repo_file(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let from: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "two stages: {from:?}");
    assert!(
        from[1].contains("-slim"),
        "runtime stage on a slim image: {from:?}"
    );
    assert!(
        from[1].contains("debian:"),
        "runtime stage on Debian: {from:?}"
    );
    let users: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .collect();
    let user = users.last().expect("a USER line").trim();
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: USER {user}");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            if *source == "." {
                continue;
            }
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(path.exists(), "{line}: no {source}");
            assert!(
                !ignored.iter().any(|i| source.starts_with(i.as_str())),
                "{line}: {source} is excluded by .dockerignore"
            );
        }
    }
    // The build stage builds from the context: what Cargo.toml declares
    // must not be ignored.
    for needed in ["src", "benches", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignored.iter().any(|i| i == needed),
            ".dockerignore excludes {needed}"
        );
    }
}
