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
mod tests {
    //! Both ends in memory: a client [`TlsSession`] and a server one, with
    //! ciphertext pumped between them through `Vec`s.

    use super::*;
    use rustls::version::{TLS12, TLS13};

    fn cert_path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(name)
    }

    fn pair(stem: &str) -> CertKeyPaths {
        CertKeyPaths {
            cert: cert_path(&format!("{stem}.pem")),
            key: cert_path(&format!("{stem}.key")),
        }
    }

    fn listen_config() -> TlsListenConfig {
        TlsListenConfig {
            default: pair("server"),
            sni: vec![pair("other")],
        }
    }

    fn client_config(
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(&cert_path("ca.pem")).unwrap() {
            roots.add(cert).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Side {
        Client,
        Server,
    }

    /// Moves ciphertext both ways until neither side has anything to send.
    fn pump(
        client: &mut TlsSession,
        server: &mut TlsSession,
        client_got: &mut Vec<u8>,
        server_got: &mut Vec<u8>,
    ) -> Result<(), (Side, TlsError)> {
        for _ in 0..64 {
            let mut to_server = Vec::new();
            client.take_ciphertext(&mut to_server).unwrap();
            if !to_server.is_empty() {
                server
                    .receive(&to_server, server_got)
                    .map_err(|e| (Side::Server, e))?;
            }
            let mut to_client = Vec::new();
            server.take_ciphertext(&mut to_client).unwrap();
            if !to_client.is_empty() {
                client
                    .receive(&to_client, client_got)
                    .map_err(|e| (Side::Client, e))?;
            }
            if to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
        }
        panic!("the handshake did not settle");
    }

    fn connect(
        server_config: &Arc<ServerConfig>,
        client_config: &Arc<ClientConfig>,
        name: &str,
    ) -> Result<(TlsSession, TlsSession), (Side, TlsError)> {
        let mut server = TlsSession::server(server_config.clone()).unwrap();
        let mut client =
            TlsSession::client(client_config.clone(), server_name(name).unwrap()).unwrap();
        assert!(client.wants_write() && server.is_handshaking());
        pump(&mut client, &mut server, &mut Vec::new(), &mut Vec::new())?;
        assert!(!client.is_handshaking() && !server.is_handshaking());
        Ok((client, server))
    }

    fn leaf_names(session: &TlsSession) -> Vec<String> {
        let chain = session.peer_certificates().expect("peer certificates");
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
        leaf.valid_dns_names().map(str::to_owned).collect()
    }

    #[test]
    fn handshake_alpn_and_both_directions() {
        let server_config = load_server_config(&listen_config()).unwrap();
        let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
        let (mut client, mut server) =
            connect(&server_config, &client_config, "localhost").unwrap();
        assert_eq!(server.alpn(), Some(ALPN_HTTP_1_1));
        assert_eq!(client.alpn(), Some(ALPN_HTTP_1_1));
        assert_eq!(server.sni(), Some("localhost"));
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_3));

        // Client to server: a request.
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let mut wire = Vec::new();
        client.write_plaintext(request, &mut wire).unwrap();
        let mut got = Vec::new();
        let seen = server.receive(&wire, &mut got).unwrap();
        assert_eq!(got, request);
        assert_eq!(seen.plaintext, request.len());
        assert!(!seen.peer_closed);

        // Server to client: 1 MiB in one call, far over rustls' 64 KiB buffer.
        let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        server.write_plaintext(&body, &mut wire).unwrap();
        assert!(wire.len() > body.len());
        let mut got = Vec::new();
        // Delivered in odd-sized TCP reads.
        for chunk in wire.chunks(7001) {
            client.receive(chunk, &mut got).unwrap();
        }
        assert!(got == body, "1 MiB arrived intact");

        // close_notify.
        let mut wire = Vec::new();
        server.close(&mut wire).unwrap();
        let seen = client.receive(&wire, &mut Vec::new()).unwrap();
        assert!(seen.peer_closed);
    }

    #[test]
    fn handshake_done_is_reported_once() {
        let server_config = load_server_config(&listen_config()).unwrap();
        let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
        let mut server = TlsSession::server(server_config).unwrap();
        let mut client =
            TlsSession::client(client_config, server_name("localhost").unwrap()).unwrap();
        let mut done = 0;
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.take_ciphertext(&mut wire).unwrap();
            done += usize::from(
                server
                    .receive(&wire, &mut Vec::new())
                    .unwrap()
                    .handshake_done,
            );
            let mut wire = Vec::new();
            server.take_ciphertext(&mut wire).unwrap();
            client.receive(&wire, &mut Vec::new()).unwrap();
        }
        assert_eq!(done, 1);
    }

    #[test]
    fn sni_picks_the_certificate_by_san() {
        let server_config = load_server_config(&listen_config()).unwrap();
        let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
        for (name, want) in [
            ("localhost", "localhost"),
            ("other.test", "other.test"),
            ("a.other.test", "other.test"),
            // An IP address is not sent as SNI: the default certificate.
            ("127.0.0.1", "localhost"),
        ] {
            let (client, server) = connect(&server_config, &client_config, name).unwrap();
            assert!(leaf_names(&client).contains(&want.to_owned()), "{name}");
            let sent = if name.parse::<std::net::IpAddr>().is_ok() {
                None
            } else {
                Some(name)
            };
            assert_eq!(server.sni(), sent);
        }
        // A name no certificate has gets the default one, which the client
        // then rejects for the wrong name.
        let err = connect(&server_config, &client_config, "unknown.test").unwrap_err();
        assert_eq!(err.0, Side::Client);
        assert!(matches!(
            err.1,
            TlsError::Protocol(rustls::Error::InvalidCertificate(_))
        ));
    }

    #[test]
    fn resumption_in_tls13_and_tls12() {
        let server_config = load_server_config(&listen_config()).unwrap();
        for version in [&TLS13, &TLS12] {
            let client_config = client_config(&[version], &[ALPN_HTTP_1_1]);
            let (client, server) = connect(&server_config, &client_config, "localhost").unwrap();
            assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
            assert_eq!(server.protocol_version(), Some(version.version));
            let (client, server) = connect(&server_config, &client_config, "localhost").unwrap();
            assert_eq!(
                client.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{version:?}"
            );
            assert_eq!(server.handshake_kind(), Some(HandshakeKind::Resumed));
        }
    }

    #[test]
    fn a_reloaded_config_serves_the_new_certificate_and_resumes_old_sessions() {
        let before = load_server_config(&listen_config()).unwrap();
        let swapped = TlsListenConfig {
            default: pair("other"),
            sni: Vec::new(),
        };
        let after = reload_server_config(&swapped, &before).unwrap();
        for version in [&TLS13, &TLS12] {
            let client_config = client_config(&[version], &[ALPN_HTTP_1_1]);
            let (client, _) = connect(&before, &client_config, "localhost").unwrap();
            assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
            // The session from before the reload resumes after it.
            let (client, server) = connect(&after, &client_config, "localhost").unwrap();
            assert_eq!(
                client.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "{version:?}"
            );
            assert_eq!(server.handshake_kind(), Some(HandshakeKind::Resumed));
        }
        // A full handshake gets the new default certificate.
        let fresh = client_config(&[&TLS13], &[ALPN_HTTP_1_1]);
        let (client, _) = connect(&after, &fresh, "other.test").unwrap();
        assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
        assert!(leaf_names(&client).contains(&"other.test".to_owned()));
        // A config built from scratch has other ticket keys: no resumption.
        let unrelated = load_server_config(&listen_config()).unwrap();
        let (client, _) = connect(&before, &fresh, "localhost").unwrap();
        assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
        let (client, _) = connect(&unrelated, &fresh, "localhost").unwrap();
        assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
    }

    #[test]
    fn h2_only_alpn_is_refused_and_no_alpn_is_fine() {
        let server_config = load_server_config(&listen_config()).unwrap();
        let h2 = client_config(&[&TLS13, &TLS12], &[b"h2"]);
        let err = connect(&server_config, &h2, "localhost").unwrap_err();
        assert_eq!(err.0, Side::Server);
        assert!(matches!(
            err.1,
            TlsError::Protocol(rustls::Error::NoApplicationProtocol)
        ));

        let both = client_config(&[&TLS13], &[b"h2", ALPN_HTTP_1_1]);
        let (client, _) = connect(&server_config, &both, "localhost").unwrap();
        assert_eq!(client.alpn(), Some(ALPN_HTTP_1_1));

        let none = client_config(&[&TLS13], &[]);
        let (client, _) = connect(&server_config, &none, "localhost").unwrap();
        assert_eq!(client.alpn(), None);
    }

    #[test]
    fn tls11_client_hello_is_refused_with_an_alert() {
        // A ClientHello with version 3.2 (TLS 1.1) and no supported_versions.
        let mut hello = vec![0x03, 0x02];
        hello.extend([7u8; 32]); // random
        hello.push(0); // session id
        hello.extend([0x00, 0x02, 0xc0, 0x2f]); // one suite
        hello.extend([0x01, 0x00]); // null compression
        let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
        handshake.extend(&hello);
        let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
        record.extend(&handshake);

        let server_config = load_server_config(&listen_config()).unwrap();
        let mut server = TlsSession::server(server_config).unwrap();
        let err = server.receive(&record, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, TlsError::Protocol(_)), "{err}");
        let mut alert = Vec::new();
        server.take_ciphertext(&mut alert).unwrap();
        assert_eq!(alert.first(), Some(&0x15), "an alert record is queued");
    }

    #[test]
    fn garbage_gets_an_alert() {
        let server_config = load_server_config(&listen_config()).unwrap();
        let mut server = TlsSession::server(server_config).unwrap();
        let err = server
            .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, TlsError::Protocol(_)));
        let mut alert = Vec::new();
        server.take_ciphertext(&mut alert).unwrap();
        assert_eq!(alert.first(), Some(&0x15));
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ringlb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();

        let missing = CertKeyPaths {
            cert: dir.join("missing.pem"),
            key: cert_path("server.key"),
        };
        let err = load_certified_key(&missing).unwrap_err();
        assert_eq!(
            (err.path(), err.which()),
            (Some(&*missing.cert), Some(Which::Cert))
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let unparsable = CertKeyPaths {
            cert: garbage.clone(),
            key: cert_path("server.key"),
        };
        let err = load_certified_key(&unparsable).unwrap_err();
        assert_eq!(
            (err.path(), err.which()),
            (Some(&*garbage), Some(Which::Cert))
        );

        let bad_key = CertKeyPaths {
            cert: cert_path("server.pem"),
            key: garbage.clone(),
        };
        let err = load_certified_key(&bad_key).unwrap_err();
        assert_eq!(
            (err.path(), err.which()),
            (Some(&*garbage), Some(Which::Key))
        );

        let mismatch = CertKeyPaths {
            cert: cert_path("server.pem"),
            key: cert_path("other.key"),
        };
        let err = load_certified_key(&mismatch).unwrap_err();
        assert_eq!(err.which(), Some(Which::Key));
        assert!(err.to_string().contains("does not match"), "{err}");

        assert!(load_client_config(&garbage).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn san_names_are_read() {
        let cert = load_certified_key(&pair("other")).unwrap();
        assert_eq!(cert.names, ["other.test", "*.other.test"]);
        let cert = load_certified_key(&pair("server")).unwrap();
        assert_eq!(cert.names, ["localhost"]);
    }
}
