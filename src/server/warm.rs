//! Cache warming (`cache.warm = ["/a", ...]` on a route): after a start
//! and after each reload, the paths are fetched once through the proxy's
//! own plain-HTTP listener, so they take the whole pipeline (routing,
//! rewrites, the cache stage) and land in the zone as a client's request
//! would.
//!
//! Why through the listener: a fetch made beside the pipeline would have
//! to repeat its every step. Invariants: warming runs on its own thread
//! and never delays serving; each fetch has a deadline; a failure is
//! logged and counted, never fatal; a route with an exact `host` is asked
//! with that `Host`, others with the listener's address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, HostPattern};

/// Deadline of one warming request, connect to last byte.
const WARM_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes read of one warming response (the rest is left unread and
/// the connection closed; the cache stored what the client side sent).
const WARM_READ_LIMIT: usize = 64 << 20;

/// The requests to make: `(Host, target)` for each route's `warm` path.
pub fn warm_requests(config: &Config, listener: SocketAddr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for route in &config.routes {
        let Some(cache) = &route.cache else { continue };
        let host = match &route.host {
            Some(HostPattern::Exact(h)) => h.clone(),
            _ => listener.to_string(),
        };
        for path in &cache.warm {
            out.push((host.clone(), path.clone()));
        }
    }
    out
}

/// Starts warming `config`'s paths on a thread, through `listeners` (the
/// first plain-HTTP one). Returns at once.
pub fn spawn(config: Arc<Config>, listeners: Vec<(SocketAddr, bool)>) {
    let Some(listener) = listeners.iter().find(|(_, tls)| !tls).map(|(a, _)| *a) else {
        if config
            .routes
            .iter()
            .any(|r| r.cache.as_ref().is_some_and(|c| !c.warm.is_empty()))
        {
            tracing::warn!(
                "cache.warm needs a plain-HTTP listener to fetch through; nothing warmed"
            );
        }
        return;
    };
    let requests = warm_requests(&config, listener);
    if requests.is_empty() {
        return;
    }
    let target = connect_addr(listener);
    let spawned = std::thread::Builder::new()
        .name("ringlb-warm".into())
        .spawn(move || {
            // After a reload, each worker takes the new config from its
            // channel; give them that moment so the fetches meet it.
            std::thread::sleep(Duration::from_millis(200));
            let (mut ok, mut failed) = (0, 0);
            for (host, path) in &requests {
                match fetch(target, host, path) {
                    Ok(status) if status < 400 => ok += 1,
                    Ok(status) => {
                        failed += 1;
                        tracing::warn!(path, status, "cache warming got an error status");
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(path, error = %e, "cache warming failed");
                    }
                }
            }
            tracing::info!(ok, failed, "cache warming done");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the cache warming thread");
    }
}

/// A wildcard listen address is reached on loopback.
fn connect_addr(listener: SocketAddr) -> SocketAddr {
    let mut addr = listener;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// One GET with `Connection: close`; the status of its response.
fn fetch(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, WARM_TIMEOUT)?;
    stream.set_read_timeout(Some(WARM_TIMEOUT))?;
    stream.set_write_timeout(Some(WARM_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringlb-warm\r\nConnection: close\r\n\r\n"
    )?;
    // Read to the end so the proxy sends (and stores) the whole body.
    let mut response = Vec::new();
    stream
        .take(WARM_READ_LIMIT as u64)
        .read_to_end(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn requests_use_the_route_host_or_the_listener() {
        let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
                   [cache.zones.z]\n\
                   [[routes]]\nupstream = \"app\"\nhost = \"api.example.com\"\n\
                   cache = { zone = \"z\", warm = [\"/a\", \"/b?c=1\"] }\n\
                   [[routes]]\nupstream = \"app\"\npath_prefix = \"/x\"\ncache = { zone = \"z\", warm = [\"/x/1\"] }\n\
                   [[routes]]\nupstream = \"app\"\n\
                   [upstreams.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
        let config = Config::from_toml_str(src, Path::new("c.toml")).unwrap();
        let listener: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            warm_requests(&config, listener),
            [
                ("api.example.com".to_owned(), "/a".to_owned()),
                ("api.example.com".to_owned(), "/b?c=1".to_owned()),
                ("127.0.0.1:8080".to_owned(), "/x/1".to_owned()),
            ]
        );
        assert_eq!(
            connect_addr("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
    }
}
