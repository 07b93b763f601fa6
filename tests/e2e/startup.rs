//! The start-up check for io_uring: a process whose seccomp filter refuses
//! `io_uring_setup`, as Docker's default profile does since Docker 25, must
//! exit non-zero at once with a message naming the cause, not start
//! workers that die.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

use crate::harness::{bin, free_port, strip_ansi, Proxy, Refused, TempDir, WAIT};

/// A filter that answers `errno` to the io_uring syscall `nr` and allows
/// everything else.
fn refuse(nr: i64, errno: i32) -> BpfProgram {
    let arch = std::env::consts::ARCH
        .try_into()
        .expect("seccompiler supports this architecture");
    SeccompFilter::new(
        [(nr, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .expect("filter")
    .try_into()
    .expect("compile filter")
}

/// Runs `ringlb ARGS` under `filter` (installed between fork and exec) and
/// returns its exit code and everything it printed.
fn run_filtered(args: &[&str], filter: BpfProgram) -> (Option<i32>, String) {
    let dir = TempDir::new();
    let out = dir.path().join("out.log");
    let file = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    // SAFETY: the closure only makes two syscalls (prctl, seccomp) on a
    // filter built before the fork; it allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&filter).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let mut child = cmd.spawn().expect("spawn ringlb under a seccomp filter");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ringlb kept running although io_uring_setup is refused:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = strip_ansi(&std::fs::read_to_string(&out).unwrap_or_default());
    (status.code(), text)
}

/// A valid config on a free port, and that port.
fn config(dir: &TempDir, refused: &Refused) -> (String, u16) {
    let port = free_port();
    let text = Proxy::builder()
        .upstream("app", &[refused.addr], &[])
        .config_text(port);
    (dir.write("ringlb.toml", &text).display().to_string(), port)
}

#[test]
fn eperm_from_io_uring_setup_names_seccomp_and_the_profile() {
    let (dir, refused) = (TempDir::new(), Refused::new());
    let (path, port) = config(&dir, &refused);
    let (code, text) = run_filtered(
        &["--config", &path],
        refuse(libc::SYS_io_uring_setup, libc::EPERM),
    );
    assert_eq!(code, Some(1), "exit code; output:\n{text}");
    for needle in [
        "io_uring_setup failed",
        "Operation not permitted",
        "seccomp",
        "Docker 25",
        "--security-opt seccomp=contrib/seccomp-io_uring.json",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("ringlb is serving"),
        "started serving:\n{text}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the proxy's port"
    );
}

#[test]
fn enosys_from_io_uring_setup_names_the_kernel() {
    let (dir, refused) = (TempDir::new(), Refused::new());
    let (path, _) = config(&dir, &refused);
    let (code, text) = run_filtered(
        &["run", "--config", &path],
        refuse(libc::SYS_io_uring_setup, libc::ENOSYS),
    );
    assert_eq!(code, Some(1), "exit code; output:\n{text}");
    for needle in ["io_uring_setup failed", "Linux 5.11", "CONFIG_IO_URING"] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

/// The check uses each io_uring syscall, so a filter that lets the ring be
/// made but refuses `io_uring_enter` is caught at start too.
#[test]
fn eperm_from_io_uring_enter_is_caught_at_start() {
    let (dir, refused) = (TempDir::new(), Refused::new());
    let (path, _) = config(&dir, &refused);
    let (code, text) = run_filtered(
        &["--config", &path],
        refuse(libc::SYS_io_uring_enter, libc::EPERM),
    );
    assert_eq!(code, Some(1), "exit code; output:\n{text}");
    assert!(text.contains("io_uring_enter failed"), "{text}");
}

/// The demo checks too, before it prints anything that suggests it runs.
#[test]
fn the_demo_checks_io_uring_before_starting() {
    let (code, text) = run_filtered(
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        refuse(libc::SYS_io_uring_setup, libc::EPERM),
    );
    assert_eq!(code, Some(1), "exit code; output:\n{text}");
    assert!(text.contains("io_uring_setup failed"), "{text}");
    assert!(!text.contains("curl"), "printed usage anyway:\n{text}");
}
