//! TLS with rustls: certificate loading, the SNI resolver, server and
//! client configs, and [`TlsSession`], a sans-IO adapter over owned buffers.
//!
//! Why sans-IO: the io layer reads and writes owned buffers through
//! io_uring, so rustls never sees a socket. The caller feeds received
//! ciphertext in with [`TlsSession::receive`] and gets plaintext appended to
//! its own `Vec`; it hands plaintext to [`TlsSession::write_plaintext`] and
//! gets ciphertext appended to another `Vec`, which it then writes out.
//!
//! Invariants:
//! - Only TLS 1.2 and TLS 1.3, only the `ring` provider, ALPN `http/1.1`.
//!   A client that offers ALPN without `http/1.1` (h2 only) is refused with
//!   a `no_application_protocol` alert, as RFC 7301 section 3.2 asks.
//! - rustls' own buffers stay bounded (its 64 KiB default): `receive`
//!   drains plaintext after every record batch and `write_plaintext` drains
//!   ciphertext whenever rustls stops taking plaintext, so no input size
//!   can fill them. What grows is the caller's `Vec`, by about the size of
//!   what the caller passed in.
//! - After any error from `receive`, rustls has queued an alert: the caller
//!   calls [`TlsSession::take_ciphertext`], sends that, and closes.
//! - A server config is built from files at load time (`ringlb check`
//!   catches a bad certificate) and again when the server starts or
//!   reloads, so a renewed certificate is picked up by a reload.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Connection, HandshakeKind, ProtocolVersion, ServerConfig};

/// The only application protocol we speak.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// TLS 1.2 session IDs remembered per server config (all workers share one
/// config, so one cache). TLS 1.3 and ticket-capable TLS 1.2 clients resume
/// with stateless tickets instead and cost no memory here.
pub const SESSION_CACHE_SIZE: usize = 4096;

/// One certificate chain and its private key, as paths. Relative paths
/// were already resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPaths {
    /// PEM file: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: one private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// A listener's `tls` table: a default certificate and more certificates
/// chosen by SNI.
///
/// The names a certificate serves are the DNS names in its subject
/// alternative names (`*.example.com` matches one label). A client that
/// sends no SNI, or a name no certificate has, gets the default one. When
/// two certificates claim the same name, the first listed wins, the
/// default before the `sni` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenConfig {
    /// `cert` and `key`.
    pub default: CertKeyPaths,
    /// `sni = [{ cert, key }, ...]`.
    pub sni: Vec<CertKeyPaths>,
}

/// Which file of a [`CertKeyPaths`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// Why certificates or keys could not be loaded, or a session failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        which: Which,
        error: std::io::Error,
    },
    /// The file is not PEM, or holds no certificate / no private key.
    Parse {
        path: PathBuf,
        which: Which,
        reason: String,
    },
    /// The private key does not belong to the certificate, or its type is
    /// not supported by the provider.
    Key { path: PathBuf, reason: String },
    /// The certificate is not a parsable X.509 end-entity certificate.
    Certificate { path: PathBuf, reason: String },
    /// Building the rustls config failed (should not happen with our
    /// fixed settings).
    Config(rustls::Error),
    /// The TLS protocol failed in a session; an alert is queued.
    Protocol(rustls::Error),
    /// rustls refused bytes (its buffers are full): a bug in the caller's
    /// pumping, or a peer that sends far ahead.
    Io(std::io::Error),
}

impl TlsError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Parse { path, .. }
            | TlsError::Key { path, .. }
            | TlsError::Certificate { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether the error is about the `cert` or the `key` file.
    pub fn which(&self) -> Option<Which> {
        match self {
            TlsError::Read { which, .. } | TlsError::Parse { which, .. } => Some(*which),
            TlsError::Key { .. } => Some(Which::Key),
            TlsError::Certificate { .. } => Some(Which::Cert),
            _ => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error, .. } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            TlsError::Parse { path, reason, .. } => write!(f, "{}: {reason}", path.display()),
            TlsError::Key { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Certificate { path, reason } => {
                write!(f, "{}: bad certificate: {reason}", path.display())
            }
            TlsError::Config(e) => write!(f, "cannot build the TLS config: {e}"),
            TlsError::Protocol(e) => write!(f, "TLS error: {e}"),
            TlsError::Io(e) => write!(f, "TLS buffer error: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read_file(path: &Path, which: Which) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        which,
        error,
    })
}

/// Reads every certificate in a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, Which::Cert)?;
    let parse = |reason: String| TlsError::Parse {
        path: path.to_owned(),
        which: Which::Cert,
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(parse("no CERTIFICATE block in the file".to_owned()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, Which::Key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Parse {
        path: path.to_owned(),
        which: Which::Key,
        reason: format!("no usable PEM private key: {e}"),
    })
}

/// A loaded certificate with the DNS names it serves (lowercase; wildcards
/// kept as `*.example.com`).
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
}

/// Loads one certificate chain and key, checks that they match and reads
/// the leaf's DNS names.
pub fn load_certified_key(paths: &CertKeyPaths) -> Result<LoadedCert, TlsError> {
    let chain = load_certs(&paths.cert)?;
    let names = {
        let leaf =
            webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| TlsError::Certificate {
                path: paths.cert.clone(),
                reason: format!("{e:?}"),
            })?;
        leaf.valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect()
    };
    let key = load_key(&paths.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "private key does not match the certificate {}",
                paths.cert.display()
            ),
            other => format!("unusable private key: {other}"),
        };
        TlsError::Key {
            path: paths.key.clone(),
            reason,
        }
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
    })
}

/// Picks the certificate by SNI, falling back to the default.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(default: LoadedCert, others: Vec<LoadedCert>) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in std::iter::once(&default).chain(&others) {
            for name in &cert.names {
                let map = match name.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_owned()),
                    None => exact.entry(name.clone()),
                };
                map.or_insert_with(|| cert.key.clone());
            }
        }
        SniResolver {
            default: default.key,
            exact,
            wildcard,
        }
    }

    /// The certificate for `name` (lowercase, as rustls hands it over).
    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Builds the rustls server config of one TLS listener: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, SNI with a default certificate, stateless session
/// tickets (a fresh random key per listener, so tickets do not survive a
/// restart) and a TLS 1.2 session-ID cache.
pub fn load_server_config(config: &TlsListenConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let mut server = build_server_config(config)?;
    server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    Ok(Arc::new(server))
}

/// The config of a listener that a reload keeps: certificates and keys
/// read again from `config`'s files, while the ticket keys and session
/// cache carry over from `previous`, so clients resume across the reload.
/// Connections already accepted keep `previous` (each holds its own
/// `Arc`), so a handshake in progress finishes as it began.
pub fn reload_server_config(
    config: &TlsListenConfig,
    previous: &ServerConfig,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut server = build_server_config(config)?;
    server.session_storage = previous.session_storage.clone();
    server.ticketer = previous.ticketer.clone();
    Ok(Arc::new(server))
}

/// Loads and checks every file of a TLS listener (for config validation)
/// without making the ticket key and session cache a listener needs.
pub fn check_server_config(config: &TlsListenConfig) -> Result<(), TlsError> {
    build_server_config(config).map(drop)
}

fn build_server_config(config: &TlsListenConfig) -> Result<ServerConfig, TlsError> {
    let default = load_certified_key(&config.default)?;
    let others = config
        .sni
        .iter()
        .map(load_certified_key)
        .collect::<Result<Vec<_>, _>>()?;
    let resolver = SniResolver::new(default, others);
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(server)
}

/// Builds a client config for TLS to backends that trusts only the
/// certificates in the PEM file `ca`: TLS 1.2 and 1.3, ALPN `http/1.1`,
/// rustls' in-memory session resumption (256 servers).
pub fn load_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(client))
}

/// Parses a backend `tls_server_name`: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("{e}"))
}

/// What one [`TlsSession::receive`] call saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Plaintext bytes appended to the caller's buffer.
    pub plaintext: usize,
    /// The handshake finished during this call (count it once).
    pub handshake_done: bool,
    /// The peer sent close_notify: no more plaintext will come.
    pub peer_closed: bool,
}

/// One TLS connection, server or client side, driven with owned buffers.
///
/// The loop the io layer runs:
/// 1. after a socket read, `receive(&bytes, &mut plaintext)`; on `Err`,
///    `take_ciphertext`, send it, close;
/// 2. whenever `wants_write()`, `take_ciphertext(&mut out)` and send `out`
///    (during the handshake this is how replies go out);
/// 3. to send plaintext, `write_plaintext(data, &mut out)` and send `out`;
/// 4. to close, `close(&mut out)` (close_notify) and send `out`.
pub struct TlsSession {
    conn: Connection,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("sni", &self.sni())
            .finish()
    }
}

impl TlsSession {
    /// A server-side session for an accepted connection.
    pub fn server(config: Arc<ServerConfig>) -> Result<TlsSession, TlsError> {
        let conn = rustls::ServerConnection::new(config).map_err(TlsError::Config)?;
        Ok(TlsSession {
            conn: Connection::Server(conn),
        })
    }

    /// A client-side session to a backend; the ClientHello is queued at
    /// once (`wants_write()` is true).
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsSession, TlsError> {
        let conn = rustls::ClientConnection::new(config, name).map_err(TlsError::Config)?;
        Ok(TlsSession {
            conn: Connection::Client(conn),
        })
    }

    /// Feeds all of `ciphertext` to rustls, processes it, and appends the
    /// decrypted plaintext to `plaintext`. Empty `ciphertext` means the
    /// peer closed TCP (EOF); no error is returned for that here: a
    /// truncation shows as `peer_closed == false` with no more data.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let was_handshaking = self.conn.is_handshaking();
        let mut seen = Received::default();
        loop {
            let eof = ciphertext.is_empty();
            // `&[u8]: Read` advances the slice by what rustls took.
            self.conn.read_tls(&mut ciphertext).map_err(TlsError::Io)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(TlsError::Protocol)?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plaintext.len();
                plaintext.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plaintext[start..])
                    .map_err(TlsError::Io)?;
                seen.plaintext += n;
            }
            seen.peer_closed |= state.peer_has_closed();
            if eof || ciphertext.is_empty() {
                break;
            }
        }
        seen.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(seen)
    }

    /// Encrypts all of `data`, appending the records (and anything else
    /// pending, such as handshake messages) to `out`. Data written before
    /// the handshake ends is sent when it ends. rustls' buffer stays within
    /// its 64 KiB limit: ciphertext is drained whenever it is full, so any
    /// size works.
    pub fn write_plaintext(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data).map_err(TlsError::Io)?;
            data = &data[n..];
            if n == 0 || self.conn.wants_write() {
                if self.conn.is_handshaking() && n == 0 {
                    // Plaintext waits for the handshake and the buffer is
                    // full: the caller must pump the handshake first.
                    return Err(TlsError::Io(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "TLS handshake not finished and plaintext buffer full",
                    )));
                }
                self.take_ciphertext(out)?;
            }
        }
        self.take_ciphertext(out)?;
        Ok(())
    }

    /// Appends every pending TLS record (handshake, alerts, data) to `out`;
    /// returns how many bytes were appended.
    pub fn take_ciphertext(&mut self, out: &mut Vec<u8>) -> Result<usize, TlsError> {
        let mut total = 0;
        while self.conn.wants_write() {
            total += self.conn.write_tls(out).map_err(TlsError::Io)?;
        }
        Ok(total)
    }

    /// Queues close_notify and appends it (with anything pending) to `out`.
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<usize, TlsError> {
        self.conn.send_close_notify();
        self.take_ciphertext(out)
    }

    /// Whether ciphertext is waiting for [`TlsSession::take_ciphertext`].
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The SNI name the client sent (server side), lowercase.
    pub fn sni(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(c) => c.server_name(),
            Connection::Client(_) => None,
        }
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Full or resumed, once the handshake is done.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    /// The peer's certificate chain (client side: the server's).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }
}

#[cfg(test)]
mod tests;
