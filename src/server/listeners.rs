//! The public listeners across start and reloads.
//!
//! The main thread binds every worker's socket up front (one
//! `SO_REUSEPORT` socket per worker per address), so a bind or certificate
//! error refuses a start or a reload before any worker changes. Each
//! worker then adopts its sockets and runs one accept loop per listener.
//!
//! Across a reload, a listener is known by its configured address:
//! - kept: same socket, no accept queue is ever lost; its TLS config is
//!   rebuilt from the files (new certificates, same ticket keys);
//! - new: bound here, adopted by the workers;
//! - removed: each worker stops accepting on it at once, then its
//!   connections drain: a request in flight finishes with
//!   `Connection: close`, an idle keep-alive connection is closed.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustls::ServerConfig;

use super::takeover::Handed;
use super::StartError;
use crate::config::Config;
use crate::io::BoundSocket;

/// A listener of the running config, as the main thread knows it.
#[derive(Clone)]
pub struct Bound {
    /// The `server.listen` address it is known by (port 0 included).
    pub configured: SocketAddr,
    /// The bound address (port 0 resolved).
    pub local: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
    /// A second descriptor of every worker's socket, handed to a new
    /// process on a takeover (empty without `server.upgrade_socket`).
    pub sockets: Arc<Vec<OwnedFd>>,
}

/// One listener of a config, for one worker.
pub(super) struct ListenerUpdate {
    pub configured: SocketAddr,
    /// The worker's own sockets for a listener it does not have yet
    /// (one, or several after a takeover from a process with more
    /// workers); empty for one it keeps.
    pub sockets: Vec<BoundSocket>,
    pub tls: Option<Arc<ServerConfig>>,
    /// `proxy_protocol` with `accept = true`.
    pub proxy_protocol: Option<Arc<crate::config::ProxyProtocolAccept>>,
    pub backlog: u32,
}

/// The listeners of `config` given those already `running`: binds the new
/// ones (`workers` sockets each) and builds every TLS config. Returns the
/// new set and, per worker, what it serves from now on. Nothing changes
/// on `Err`: sockets bound so far close when dropped.
///
/// `handed`: sockets received in a takeover. A listener found there (by
/// configured address) binds nothing: its sockets are spread over the
/// workers (several per worker if the old process had more), and if the
/// old process had fewer workers, the rest join its port. What is used is
/// taken out of `handed`.
pub(super) fn plan(
    running: &[Bound],
    config: &Config,
    workers: usize,
    handed: &mut Vec<Handed>,
) -> Result<(Vec<Bound>, Vec<Vec<ListenerUpdate>>), StartError> {
    let backlog = config.server.backlog.get();
    let mut bound = Vec::with_capacity(config.server.listen.len() + config.tcp.len());
    let mut per_worker: Vec<Vec<ListenerUpdate>> = (0..workers).map(|_| Vec::new()).collect();
    // HTTP and `[[tcp]]` listeners alike: the accept loop asks the
    // config which one an address is, at each accept.
    let every_listener = config
        .server
        .listen
        .iter()
        .chain(config.tcp.iter().map(|t| &t.listen));
    for listen in every_listener {
        let addr = listen.addr;
        let kept = running.iter().find(|b| b.configured == addr);
        let tls = match (&listen.tls, kept.and_then(|k| k.tls.as_ref())) {
            (None, _) => None,
            (Some(files), Some(previous)) => {
                Some(crate::tls::reload_server_config(files, previous))
            }
            (Some(files), None) => Some(crate::tls::load_server_config(files)),
        }
        .transpose()
        .map_err(|error| StartError::Tls { addr, error })?;
        let bind_error = |error| StartError::Bind { addr, error };
        let (local, sockets, dups) = match kept {
            Some(k) => (k.local, Vec::new(), k.sockets.clone()),
            None => {
                let group = match handed.iter().position(|h| h.configured == addr) {
                    Some(i) => {
                        adopt_group(handed.swap_remove(i), backlog, workers).map_err(bind_error)?
                    }
                    None => BoundSocket::bind_group(addr, backlog, workers).map_err(bind_error)?,
                };
                // Only a process that can be taken over keeps them.
                let dups = match &config.server.upgrade_socket {
                    None => Vec::new(),
                    Some(_) => group
                        .iter()
                        .map(BoundSocket::try_clone_fd)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(bind_error)?,
                };
                (group[0].local_addr(), group, Arc::new(dups))
            }
        };
        let mut shares: Vec<Vec<BoundSocket>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, socket) in sockets.into_iter().enumerate() {
            shares[i % workers].push(socket);
        }
        for (updates, sockets) in per_worker.iter_mut().zip(shares) {
            updates.push(ListenerUpdate {
                configured: addr,
                sockets,
                tls: tls.clone(),
                proxy_protocol: listen.proxy_protocol.clone().map(Arc::new),
                backlog,
            });
        }
        bound.push(Bound {
            configured: addr,
            local,
            tls,
            sockets: dups,
        });
    }
    Ok((bound, per_worker))
}

/// A listener's sockets from a takeover, made at least `workers` strong
/// by binding more on its port (`SO_REUSEPORT`).
fn adopt_group(handed: Handed, backlog: u32, workers: usize) -> std::io::Result<Vec<BoundSocket>> {
    let mut group = handed
        .sockets
        .into_iter()
        .map(BoundSocket::from_fd)
        .collect::<std::io::Result<Vec<_>>>()?;
    let local = match group.first() {
        Some(first) => first.local_addr(),
        None => handed.local,
    };
    while group.len() < workers {
        group.push(BoundSocket::bind(local, backlog)?);
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str) -> Config {
        let text = format!(
            "[server]\nlisten = {listen}\nworkers = 2\n\
             [upstreams.app]\nbackends = [{{ addr = \"127.0.0.1:9\" }}]\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n"
        );
        Config::from_toml_str(&text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn kept_listeners_keep_their_socket_and_new_ones_bind_one_per_worker() {
        let (first, updates) = plan(&[], &config("[\"127.0.0.1:0\"]"), 2, &mut Vec::new()).unwrap();
        assert_eq!(first.len(), 1);
        let port = first[0].local.port();
        assert_ne!(port, 0, "port 0 is resolved");
        // Both workers' sockets share the resolved port.
        for worker in &updates {
            let socket = &worker[0].sockets[0];
            assert_eq!(socket.local_addr().port(), port);
        }

        // Same listener plus a new one: the first is kept (no socket),
        // the second bound for each worker.
        let (second, updates2) = plan(
            &first,
            &config("[\"127.0.0.1:0\", \"127.0.0.2:0\"]"),
            2,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(second[0].local, first[0].local);
        for worker in &updates2 {
            assert!(worker[0].sockets.is_empty());
            assert_eq!(worker[1].sockets.len(), 1);
        }
        drop(updates);
    }

    #[test]
    fn a_busy_address_is_a_bind_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = plan(&[], &config(&format!("[\"{addr}\"]")), 2, &mut Vec::new())
            .err()
            .expect("the bind fails");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
