//! A closed-loop load generator shared by tests that change something
//! under load (a backend crash, a config reload): a few threads of
//! keep-alive `GET /load/T/N`, each reconnecting when the proxy closes its
//! connection, counting requests and failures.
//!
//! With [`Load::retrying_races`], a client behaves like real ones do
//! (browsers, `hyper`, Go's `net/http`): a GET whose connection was reused
//! and that got no response byte at all before the connection ended (EOF,
//! reset, or a failed write) hit the keep-alive race, the proxy closing an
//! idle connection just as the request went out. It is retried once on a
//! fresh connection and counted as a race, not a failure; a failed retry is
//! a failure. Without it every such request is a failure.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{get, Client, Response};

/// What the clients saw, from [`Load::finish`].
pub struct LoadReport {
    /// Requests sent, a retry after a keep-alive race included.
    pub sent: usize,
    /// Every failed request (a keep-alive race retried with success is
    /// not one).
    pub errors: Vec<String>,
    /// Keep-alive races met (each followed by one retry): when, the
    /// target, and how the connection ended.
    pub races: Vec<(Instant, String)>,
}

/// Closed-loop keep-alive GET clients, counting requests and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    races: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// How one request on a connection failed.
enum Failure {
    /// The connection ended before any byte of the response: the write
    /// failed, or the read met EOF or a reset.
    BeforeResponse(String),
    Other(String),
}

/// Sends `GET target` on `c` and reads the response, telling a connection
/// that ended before the first response byte apart from other failures.
fn attempt(c: &mut Client, target: &str) -> Result<Response, Failure> {
    let early = |e: io::Error| {
        let gone = matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        );
        if gone {
            Failure::BeforeResponse(e.to_string())
        } else {
            Failure::Other(e.to_string())
        }
    };
    c.try_send(&get(target))
        .map_err(|e| early(io::Error::new(e.kind(), format!("write: {e}"))))?;
    if c.wire.buffered().is_empty() {
        match c.wire.fill() {
            Ok(0) => return Err(Failure::BeforeResponse("EOF".to_string())),
            Ok(_) => {}
            Err(e) => return Err(early(io::Error::new(e.kind(), format!("read: {e}")))),
        }
    }
    c.try_read_response_to("GET")
        .map_err(|e| Failure::Other(e.to_string()))
}

impl Load {
    /// `clients` threads; every keep-alive race is a failure.
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        Load::spawn(addr, clients, false)
    }

    /// `clients` threads retrying a GET once after a keep-alive race.
    pub fn retrying_races(addr: SocketAddr, clients: usize) -> Load {
        Load::spawn(addr, clients, true)
    }

    fn spawn(addr: SocketAddr, clients: usize, retry_races: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let races = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|t| {
                let (stop, sent, errors, races) =
                    (stop.clone(), sent.clone(), errors.clone(), races.clone());
                thread::spawn(move || {
                    // The connection and whether a response came on it.
                    let mut conn: Option<(Client, bool)> = None;
                    let mut n = 0usize;
                    let mut retrying = false;
                    while !stop.load(Ordering::SeqCst) || retrying {
                        let (c, reused) = match conn.as_mut() {
                            Some((c, reused)) => (c, *reused),
                            None => match Client::try_connect(addr) {
                                Ok(c) => {
                                    let (c, _) = conn.insert((c, false));
                                    (c, false)
                                }
                                Err(e) => {
                                    errors.lock().unwrap().push(format!("connect: {e}"));
                                    retrying = false;
                                    thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        if !retrying {
                            n += 1;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                        let target = format!("/load/{t}/{n}");
                        let was_retry = std::mem::take(&mut retrying);
                        match attempt(c, &target) {
                            Ok(r) if r.status == 200 => {
                                if r.closes() {
                                    conn = None;
                                } else if let Some((_, used)) = conn.as_mut() {
                                    *used = true;
                                }
                            }
                            Ok(r) => {
                                errors.lock().unwrap().push(format!(
                                    "{target}: {} {:?}",
                                    r.status,
                                    r.body_str()
                                ));
                                conn = None;
                            }
                            Err(Failure::BeforeResponse(e))
                                if retry_races && reused && !was_retry =>
                            {
                                races
                                    .lock()
                                    .unwrap()
                                    .push((Instant::now(), format!("{target}: {e}")));
                                retrying = true;
                                conn = None;
                            }
                            Err(Failure::BeforeResponse(e) | Failure::Other(e)) => {
                                let what = if was_retry { " (retry)" } else { "" };
                                let conn_kind = if reused { "reused" } else { "fresh" };
                                errors.lock().unwrap().push(format!(
                                    "{target}{what} on a {conn_kind} connection: {e}"
                                ));
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            errors,
            races,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops the clients (a pending retry still runs) and reports.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        let races = self.races.lock().unwrap().clone();
        LoadReport {
            sent: self.sent.load(Ordering::SeqCst),
            errors,
            races,
        }
    }
}
