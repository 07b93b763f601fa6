//! `ringlb demo`: three tiny built-in backends on ephemeral loopback ports
//! and a config that balances across them, so a new user sees round-robin
//! with one command and nothing else installed.
//!
//! The backends are deliberately plain (a thread per connection, std
//! sockets): they exist to answer with their own name, not to be fast.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use crate::config::{Config, ConfigError};

/// Upper bound on a demo request head; larger ones are refused.
const MAX_DEMO_HEAD: usize = 16 * 1024;

/// Starts the demo backends and returns the proxy config for them, with
/// the admin listener on `admin`.
pub fn config(listen: SocketAddr, admin: SocketAddr) -> Result<Config, String> {
    let mut backends = Vec::new();
    for name in ["backend-1", "backend-2", "backend-3"] {
        let addr = spawn_backend(name).map_err(|e| format!("cannot start {name}: {e}"))?;
        backends.push(addr);
    }
    let toml = demo_toml(listen, admin, &backends);
    Config::from_toml_str(&toml, Path::new("<demo>")).map_err(|e: ConfigError| e.to_string())
}

fn demo_toml(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[server]\nlisten = [\"{listen}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"demo\"\n\n[upstreams.demo]\nbackends = [{}]\n\n[admin]\nlisten = \"{admin}\"\n",
        list.join(", ")
    )
}

/// Starts one backend thread; returns its address.
pub fn spawn_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new().spawn(move || serve_demo(stream, name, addr));
            }
        })?;
    Ok(addr)
}

fn serve_demo(mut stream: TcpStream, name: &str, addr: SocketAddr) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Read one head.
        let (head_len, body_len, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut body = 0usize;
                    let mut close = req.version == Some(0);
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            body = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            close = true; // the demo does not read chunked bodies
                        }
                    }
                    break (n, body, close);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_DEMO_HEAD => {}
                _ => return,
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        // Skip the body.
        let mut have = buf.len() - head_len;
        while have < body_len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => have += n,
            }
        }
        buf.drain(..head_len + body_len.min(buf.len() - head_len));
        let body = format!("hello from {name} ({addr})\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
            body
        );
        if stream.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}
