//! The start-up check that io_uring can be used at all.
//!
//! Why: without it, a container's seccomp profile or a disabled sysctl shows
//! up as a worker thread dying during start-up with an OS error that does
//! not say why. [`probe_uring`] makes one small ring on the main thread,
//! before any worker starts, and uses each of the three io_uring syscalls
//! once, so that the cause is named in one message.

use std::fmt;
use std::io;

use io_uring::{opcode, register::Probe, IoUring};

/// The sysctl (Linux 6.6+) that turns io_uring off: 0 allowed, 1 only for
/// root and members of `kernel.io_uring_group`, 2 for nobody.
pub const IO_URING_DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Ops the proxy submits that older kernels lack; checked by name so that a
/// too-old kernel is reported as such and not as a failing request later.
const NEEDED_OPS: [(u8, &str); 8] = [
    (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    (opcode::Recv::CODE, "IORING_OP_RECV"),
    (opcode::Send::CODE, "IORING_OP_SEND"),
    (opcode::Timeout::CODE, "IORING_OP_TIMEOUT"),
    (opcode::LinkTimeout::CODE, "IORING_OP_LINK_TIMEOUT"),
    (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
];

/// Why io_uring cannot be used; its `Display` is the message for the
/// operator, naming the likely cause and the fix.
#[derive(Debug)]
pub struct UringUnavailable {
    /// What failed: a syscall name, or the op the kernel lacks.
    pub step: &'static str,
    /// The OS error, when a syscall failed.
    pub error: Option<io::Error>,
    /// The value of [`IO_URING_DISABLED_SYSCTL`], when it could be read.
    pub disabled_sysctl: Option<u32>,
}

/// Checks that this process can set up an io_uring and use it: setup,
/// register (the opcode probe) and enter (one no-op).
pub fn probe_uring() -> Result<(), UringUnavailable> {
    let fail = |step: &'static str, error: Option<io::Error>| UringUnavailable {
        step,
        error,
        disabled_sysctl: read_disabled_sysctl(),
    };
    let mut ring = IoUring::new(2).map_err(|e| fail("io_uring_setup", Some(e)))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| fail("io_uring_register", Some(e)))?;
    if let Some((_, name)) = NEEDED_OPS.iter().find(|(op, _)| !probe.is_supported(*op)) {
        return Err(fail(name, None));
    }
    let nop = opcode::Nop::new().build();
    // SAFETY: a no-op references no memory, so nothing must outlive it.
    unsafe {
        ring.submission()
            .push(&nop)
            .map_err(|_| fail("io_uring_enter", None))?;
    }
    ring.submit_and_wait(1)
        .map_err(|e| fail("io_uring_enter", Some(e)))?;
    Ok(())
}

fn read_disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string(IO_URING_DISABLED_SYSCTL)
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("io_uring is not available, and ringlb runs only on io_uring: ")?;
        let Some(error) = &self.error else {
            if self.step == "io_uring_enter" {
                return f.write_str("a new ring's submission queue was full");
            }
            return write!(
                f,
                "this kernel's io_uring lacks {}; ringlb needs Linux 5.11 or later",
                self.step
            );
        };
        write!(f, "{} failed: {error}. ", self.step)?;
        match self.disabled_sysctl {
            Some(n) if n != 0 => {
                let who = if n == 1 {
                    "only root and members of the group in /proc/sys/kernel/io_uring_group may use io_uring"
                } else {
                    "nobody may use io_uring"
                };
                return write!(
                    f,
                    "{IO_URING_DISABLED_SYSCTL} is {n} ({who}); set it to 0 \
                     (`sysctl kernel.io_uring_disabled=0`)"
                );
            }
            _ => {}
        }
        match error.raw_os_error() {
            Some(libc::EPERM) => f.write_str(
                "Most likely a seccomp filter refuses it: Docker's default seccomp profile blocks io_uring \
                 since Docker 25 (run the container with \
                 `--security-opt seccomp=contrib/seccomp-io_uring.json`, see the README's \
                 section on containers); under systemd, SystemCallFilter= must allow \
                 io_uring_setup, io_uring_enter and io_uring_register",
            ),
            Some(libc::ENOSYS) => f.write_str(
                "This kernel has no io_uring (ringlb needs Linux 5.11 or later, built with \
                 CONFIG_IO_URING), or a sandbox or seccomp filter hides it (Docker: run with \
                 `--security-opt seccomp=contrib/seccomp-io_uring.json`)",
            ),
            Some(libc::ENOMEM) => f.write_str(
                "The locked-memory limit is too low for the ring (kernels before 5.12 count \
                 rings against RLIMIT_MEMLOCK): raise it (`ulimit -l`, systemd \
                 LimitMEMLOCK=, `docker run --ulimit memlock=-1`)",
            ),
            _ => f.write_str("See the README's requirements"),
        }
    }
}

impl std::error::Error for UringUnavailable {}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(step: &'static str, errno: Option<i32>, sysctl: Option<u32>) -> String {
        UringUnavailable {
            step,
            error: errno.map(io::Error::from_raw_os_error),
            disabled_sysctl: sysctl,
        }
        .to_string()
    }

    #[test]
    fn probe_succeeds_where_the_tests_run() {
        // The e2e tests need io_uring too; a failure here names the cause.
        if let Err(e) = probe_uring() {
            panic!("{e}");
        }
    }

    #[test]
    fn eperm_names_seccomp_and_the_profile() {
        let m = message("io_uring_setup", Some(libc::EPERM), Some(0));
        assert!(m.contains("io_uring_setup failed"), "{m}");
        assert!(m.contains("seccomp"), "{m}");
        assert!(m.contains("Docker 25"), "{m}");
        assert!(m.contains("contrib/seccomp-io_uring.json"), "{m}");
        assert!(!m.contains("io_uring_disabled"), "{m}");
    }

    #[test]
    fn enosys_names_the_kernel_and_sandboxes() {
        let m = message("io_uring_setup", Some(libc::ENOSYS), None);
        assert!(m.contains("Linux 5.11"), "{m}");
        assert!(m.contains("CONFIG_IO_URING"), "{m}");
        assert!(m.contains("seccomp"), "{m}");
    }

    #[test]
    fn a_set_sysctl_is_named_with_its_value() {
        for (value, who) in [(1, "io_uring_group"), (2, "nobody")] {
            let m = message("io_uring_setup", Some(libc::EPERM), Some(value));
            assert!(
                m.contains(&format!("/proc/sys/kernel/io_uring_disabled is {value}")),
                "{m}"
            );
            assert!(m.contains(who), "{m}");
            assert!(m.contains("kernel.io_uring_disabled=0"), "{m}");
        }
    }

    #[test]
    fn enomem_names_the_memlock_limit() {
        let m = message("io_uring_setup", Some(libc::ENOMEM), Some(0));
        assert!(m.contains("RLIMIT_MEMLOCK"), "{m}");
    }

    #[test]
    fn a_failed_register_or_enter_is_named() {
        let m = message("io_uring_enter", Some(libc::EPERM), Some(0));
        assert!(m.contains("io_uring_enter failed"), "{m}");
        let m = message("IORING_OP_LINK_TIMEOUT", None, Some(0));
        assert!(m.contains("lacks IORING_OP_LINK_TIMEOUT"), "{m}");
    }
}
