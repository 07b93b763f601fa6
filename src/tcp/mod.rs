//! The L4 mode's sans-IO parts: SNI routing (`sni`) and the session
//! counters every worker shares (`stats`). The sessions themselves run in
//! `proxy::tcp`.

pub mod sni;
pub mod stats;

/// How a TCP session ended, as its access log line and the
/// `ringlb_tcp_refused_total{reason}` series name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Relayed to a backend until both directions ended (or the idle
    /// timeout, or an error, after the connect).
    Relayed,
    /// No backend of the upstream was available.
    NoBackend,
    /// Every connect attempt failed.
    ConnectFailed,
    /// With `sni_routes`: the first bytes were not a TLS ClientHello, or
    /// it did not arrive within `client_hello_timeout`.
    BadClientHello,
    /// With `sni_routes`: no route for the server name (or none given)
    /// and no default `upstream`.
    NoSniRoute,
}

impl SessionEnd {
    /// The refusals, in the order of [`stats::ListenerStats`]' counters.
    pub const REFUSALS: [SessionEnd; 4] = [
        SessionEnd::NoBackend,
        SessionEnd::ConnectFailed,
        SessionEnd::BadClientHello,
        SessionEnd::NoSniRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Relayed => "ok",
            SessionEnd::NoBackend => "no_backend",
            SessionEnd::ConnectFailed => "connect_failed",
            SessionEnd::BadClientHello => "bad_client_hello",
            SessionEnd::NoSniRoute => "no_sni_route",
        }
    }
}
