//! The status page at `GET /` on the admin listener, rendered by headless
//! Chromium: every backend has a row with its state, and a drain sent the
//! way the page's button sends it shows on the next render. With
//! `auth = "all"`, the page works with the browser's Basic credentials.
//! Last, a click on the page's own drain button in a live page (driven
//! over the DevTools protocol) drains the backend and the row shows it.
//!
//! Chromium is required (Debian's `chromium`, installed by `.ci/run`): a
//! machine without it fails these tests, it does not skip them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::{admin, admin_with};
use crate::backend::Backend;
use crate::client::{get, Headers};
use crate::harness::{Proxy, TempDir};

/// How long one Chromium run may take on a loaded machine.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
/// Renders tried before a DOM check gives up (the page refreshes every
/// 2 s; a render may also catch the state before a change).
const RENDER_ATTEMPTS: usize = 6;

/// The Chromium binary: `chromium` (Debian) or `chromium-browser`.
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!("chromium not found: install Debian's `chromium` package (.ci/run does)");
}

/// Runs headless Chromium with `args` and returns its stdout. Panics (the
/// test fails) if it cannot start, fails, or outlives [`CHROMIUM_TIMEOUT`].
fn run_chromium(profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // CI runs as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("chromium cannot start: {e}"));
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("chromium output");
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page at `url` after its scripts ran: two refreshes of virtual time
/// (Chromium waits for the page's fetches within the budget).
pub fn render(profile: &Path, url: &str) -> String {
    run_chromium(profile, &["--virtual-time-budget=5000", "--dump-dom", url])
}

/// The opening `<tr ...>` tag of the row of backend `addr` in `dom`.
fn backend_row(dom: &str, addr: SocketAddr) -> Option<&str> {
    let at = dom.find(&format!("data-addr=\"{addr}\""))?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// Renders `url` until every backend row has `attr` (e.g.
/// `data-drain="active"`) per `expect`, or panics with the last DOM.
fn wait_for_rows(profile: &Path, url: &str, expect: &[(SocketAddr, &str)]) {
    let mut dom = String::new();
    for _ in 0..RENDER_ATTEMPTS {
        dom = render(profile, url);
        let all = expect.iter().all(|(addr, attr)| {
            backend_row(&dom, *addr).is_some_and(|row| {
                row.contains("class=\"backend\"")
                    && row.contains("data-upstream=\"app\"")
                    && row.contains(attr)
            })
        });
        if all {
            return;
        }
        thread::sleep(Duration::from_secs(1));
    }
    panic!("rows never showed {expect:?}; last render:\n{dom}");
}

/// The headers Chromium sends with the page's button POST (same-origin
/// `fetch` with the admin header and no body).
fn button_headers(admin: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("Host", admin.to_string()),
        ("Origin", format!("http://{admin}")),
        ("Sec-Fetch-Site", "same-origin".into()),
        ("Sec-Fetch-Mode", "cors".into()),
        ("Sec-Fetch-Dest", "empty".into()),
        ("X-Ringlb-Admin", "1".into()),
        ("Content-Length", "0".into()),
    ]
}

fn post_as_button(
    proxy: &Proxy,
    path: &str,
    extra: &[(&'static str, String)],
) -> crate::client::Response {
    let mut headers = button_headers(proxy.admin.unwrap());
    headers.extend_from_slice(extra);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    admin_with(proxy, "POST", path, &headers)
}

#[test]
fn status_page_shows_every_backend_and_a_drain() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr, b.addr], &[])
        .start();
    for _ in 0..6 {
        assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    }
    let page = admin(&proxy, "GET", "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));

    let profile = TempDir::new();
    let url = format!("http://{}/", proxy.admin.unwrap());
    wait_for_rows(
        profile.path(),
        &url,
        &[
            (a.addr, "data-drain=\"active\""),
            (b.addr, "data-drain=\"active\""),
        ],
    );
    let dom = render(profile.path(), &url);
    let row = backend_row(&dom, a.addr).expect("row of a");
    assert!(row.contains("data-health=\"healthy\""), "{row}");
    assert!(row.contains("data-breaker=\"closed\""), "{row}");
    assert!(dom.contains("uptime "), "no uptime in:\n{dom}");

    // Without the page's own header, the listener refuses the browser POST.
    let drain = format!("/backends/app/{}/drain", a.addr);
    let mut headers = button_headers(proxy.admin.unwrap());
    headers.retain(|(k, _)| *k != "X-Ringlb-Admin");
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(admin_with(&proxy, "POST", &drain, &headers).status, 403);
    // As the button sends it: accepted, and the next render shows it.
    let r = post_as_button(&proxy, &drain, &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    wait_for_rows(
        profile.path(),
        &url,
        &[
            (a.addr, "data-drain=\"draining\""),
            (b.addr, "data-drain=\"active\""),
        ],
    );
    let enable = format!("/backends/app/{}/enable", a.addr);
    assert_eq!(post_as_button(&proxy, &enable, &[]).status, 200);
    wait_for_rows(profile.path(), &url, &[(a.addr, "data-drain=\"active\"")]);
}

#[test]
fn status_page_works_with_basic_auth_on_everything() {
    let backend = Backend::echo();
    let dir = TempDir::new();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = dir.write("users", &format!("ops:{hash}\n"));
    let proxy = Proxy::builder()
        .admin_line(&format!("users_file = \"{}\"", users.display()))
        .admin_line("auth = \"all\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    let addr = proxy.admin.unwrap();
    let r = admin(&proxy, "GET", "/");
    assert_eq!(r.status, 401, "the page is protected under auth = \"all\"");

    let profile = TempDir::new();
    let url = format!("http://ops:pw@{addr}/");
    wait_for_rows(
        profile.path(),
        &url,
        &[(backend.addr, "data-drain=\"active\"")],
    );
    // Without credentials (a fresh browser) the page gets the 401: no rows.
    let fresh = TempDir::new();
    let dom = render(fresh.path(), &format!("http://{addr}/"));
    assert!(backend_row(&dom, backend.addr).is_none(), "{dom}");

    let drain = format!("/backends/app/{}/drain", backend.addr);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ops:pw")
    );
    let r = post_as_button(&proxy, &drain, &[("Authorization", basic)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    wait_for_rows(
        profile.path(),
        &url,
        &[(backend.addr, "data-drain=\"draining\"")],
    );
}

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4),
/// to click the page's own button.
struct Browser {
    child: std::process::Child,
    to_browser: std::fs::File,
    from_browser: std::sync::mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    session: Option<String>,
    _profile: TempDir,
}

impl Browser {
    fn start() -> Browser {
        use std::io::{BufRead, BufReader};
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let profile = TempDir::new();
        let (browser_reads, to_browser) = pipe();
        let (from_browser, browser_writes) = pipe();
        let (r, w) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .args(["--no-first-run", "--remote-debugging-pipe"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork
        // and exec. The fds are first moved above 4 so that placing one
        // on 3 or 4 cannot overwrite the other.
        unsafe {
            command.pre_exec(move || {
                let high_r = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let high_w = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if high_r < 0
                    || high_w < 0
                    || libc::dup2(high_r, 3) < 0
                    || libc::dup2(high_w, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("chromium cannot start: {e}"));
        drop((browser_reads, browser_writes));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(v) = serde_json::from_slice(&message) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                message.clear();
            }
        });
        Browser {
            child,
            to_browser,
            from_browser: rx,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends one command and waits for its answer's `result`.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium closed its pipe ({method}): {e}"));
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from_browser
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer from chromium to {method}: {e}"));
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab and talks to that tab from then on.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", serde_json::json!({ "url": url }));
        let attached = self.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
        );
        self.session = attached["sessionId"].as_str().map(str::to_owned);
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Polls `expression` (the page refreshes every 2 s) until it is `want`.
    fn wait_for(&mut self, expression: &str, want: &str) {
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        loop {
            let got = self.eval(expression);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} is {got}, never {want:?}; page:\n{}",
                self.eval("document.body.outerHTML")
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A pipe `(read end, write end)`, both close-on-exec.
fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds on success; each is owned once here.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_drain_button_drains_in_a_real_browser() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr, b.addr], &[])
        .start();
    assert_eq!(admin(&proxy, "GET", "/healthz").status, 200);
    let mut browser = Browser::start();
    browser.open(&format!("http://{}/", proxy.admin.unwrap()));
    let row = format!(
        "document.querySelector('tr.backend[data-addr=\"{}\"]')",
        a.addr
    );
    browser.wait_for(&format!("{row}?.dataset.drain ?? ''"), "active");
    browser.eval(&format!("{row}.querySelector('button').click()"));
    browser.wait_for(&format!("{row}?.dataset.drain ?? ''"), "draining");
    browser.wait_for(
        "document.getElementById('action').textContent",
        &format!("app {}: drained", a.addr),
    );
    let doc = crate::admin::status(&proxy);
    assert_eq!(doc["upstreams"][0]["backends"][0]["draining"], true);
    assert_eq!(doc["upstreams"][0]["backends"][1]["draining"], false);
    // And back: the same button now says "enable".
    browser.eval(&format!("{row}.querySelector('button').click()"));
    browser.wait_for(&format!("{row}?.dataset.drain ?? ''"), "active");
}
