//! Parsing and building NBD URIs, in pure Rust.
//!
//! The format is the NBD project's URI specification as libnbd applies it:
//!
//! ```text
//! nbd[s][+unix|+vsock|+ssh]://[user@][host][:port][/export]?[param=value&...]
//! ```
//!
//! * The scheme is case-insensitive. `nbd`/`nbds` use TCP (`host` defaults
//!   to `localhost`, `port` to 10809, IPv6 literals go in brackets); `+unix`
//!   uses a Unix domain socket named by the mandatory `socket` parameter;
//!   `+vsock` uses `AF_VSOCK` with the numeric CID as host (default 2, the
//!   hypervisor); `+ssh` (libnbd 1.22) runs `ssh` to `host` (mandatory;
//!   `port` is the ssh port, default 22, and `user` the ssh user) and `nc`
//!   there to the NBD server at `localhost:10809`, or at the remote Unix
//!   socket named by `socket`. The `s` asks for TLS.
//! * The export name is the path without its first `/`, percent-decoded.
//! * Known query parameters: `socket`, `tls-certificates`, `tls-hostname`,
//!   `tls-priority`, `tls-psk-file`, `tls-username`, `tls-verify-peer`,
//!   `nbd-port` (the NBD port, instead of the authority's; for `+ssh` the
//!   port `nc` connects to; ignored for `+unix`) and `compress` (`+ssh`:
//!   `ssh -C`). A parameter given twice takes its last value. Others are
//!   kept in [`NbdUri::unknown_params`] (libnbd ignores them).

use std::fmt;

/// The port used when a URI gives none (IANA's NBD port).
pub const DEFAULT_PORT: u16 = crate::constants::DEFAULT_PORT;
/// The vsock CID used when a `+vsock` URI gives none: the host.
pub const DEFAULT_VSOCK_CID: u32 = 2;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP to `host` (a name or an address; IPv6 without brackets).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket (may start with NUL for the abstract namespace).
    Unix {
        /// The socket's path.
        socket: String,
    },
    /// `AF_VSOCK`.
    Vsock {
        /// Context ID of the peer.
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// A tunnel through `ssh` to `host`, then `nc` to the NBD server.
    Ssh {
        /// The ssh server (IPv6 without brackets).
        host: String,
        /// The ssh port.
        port: u16,
        /// The NBD server's port on the ssh server's side (`nbd-port`).
        nbd_port: u16,
        /// The NBD server's Unix socket there, instead of the port.
        socket: Option<String>,
    },
}

/// The ssh port used when an `+ssh` URI gives none.
pub(crate) const DEFAULT_SSH_PORT: u16 = 22;

/// A parsed NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    /// The scheme asks for TLS (`nbds...`).
    pub tls: bool,
    /// Where the server is.
    pub transport: Transport,
    /// The user part of the authority, used for TLS PSK authentication.
    pub username: Option<String>,
    /// The export to ask for (possibly empty).
    pub export_name: String,
    /// `tls-certificates`: a directory of certificates (a local file).
    pub tls_certificates: Option<String>,
    /// `tls-psk-file`: a file of pre-shared keys (a local file).
    pub tls_psk_file: Option<String>,
    /// `tls-username`: the PSK username.
    pub tls_username: Option<String>,
    /// `tls-verify-peer`: whether to verify the server's certificate.
    pub tls_verify_peer: Option<bool>,
    /// `tls-hostname`: the name the server's certificate must carry.
    pub tls_hostname: Option<String>,
    /// `tls-priority`: a GnuTLS priority string (the handle's policy
    /// decides whether it is accepted).
    pub tls_priority: Option<String>,
    /// `compress`: ask ssh to compress (`+ssh` only).
    pub compress: Option<bool>,
    /// Query parameters not understood, decoded, in order.
    pub unknown_params: Vec<(String, String)>,
}

/// Why a string is not an NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

fn err<T>(msg: impl Into<String>) -> Result<T, UriError> {
    Err(UriError(msg.into()))
}

/// Decodes `%XX` escapes; fails on a malformed escape or invalid UTF-8.
fn percent_decode(s: &str, what: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    // Two hex digits: at most 0xff, so the cast is exact.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return err(format!("bad percent-escape in the {what}")),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).or_else(|_| err(format!("the {what} is not valid UTF-8")))
}

fn no_nul(s: String, what: &str) -> Result<String, UriError> {
    if s.contains('\0') {
        err(format!("the {what} contains a NUL byte"))
    } else {
        Ok(s)
    }
}

fn parse_bool(v: &str, what: &str) -> Result<bool, UriError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => err(format!("{what}: expected 0 or 1, got {v:?}")),
    }
}

fn parse_number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, UriError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("cannot parse the {what} {v:?}"));
    }
    v.parse()
        .or_else(|_| err(format!("the {what} {v:?} is out of range")))
}

/// Splits `host[:port]` (brackets around IPv6) into its parts, still encoded.
fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), UriError> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return err("unterminated '[' in the host");
        };
        match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => err("unexpected text after ']' in the host"),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((hostport, None)),
        }
    }
}

impl NbdUri {
    /// A URI for `transport` with nothing else set.
    pub fn new(transport: Transport) -> NbdUri {
        NbdUri {
            tls: false,
            transport,
            username: None,
            export_name: String::new(),
            tls_certificates: None,
            tls_psk_file: None,
            tls_username: None,
            tls_verify_peer: None,
            tls_hostname: None,
            tls_priority: None,
            compress: None,
            unknown_params: Vec::new(),
        }
    }

    /// Parses an NBD URI.
    pub fn parse(uri: &str) -> Result<NbdUri, UriError> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return err("an NBD URI must start with \"nbd://\" or another nbd scheme and \"://\"");
        };
        let Some((kind, tls)) = scheme_kind(scheme) else {
            return err(format!("unknown NBD URI scheme {scheme:?}"));
        };

        let rest = rest
            .split_once('#')
            .map_or(rest, |(before, _fragment)| before);
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };

        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let username = match userinfo {
            // A ":password" part is deprecated by RFC 3986 and ignored here.
            Some(u) => {
                let user = u.split_once(':').map_or(u, |(user, _)| user);
                Some(no_nul(percent_decode(user, "user name")?, "user name")?)
            }
            None => None,
        };
        let (host, port) = split_host_port(hostport)?;
        let host = no_nul(percent_decode(host, "host")?, "host")?;
        let port = port.filter(|p| !p.is_empty());

        let export_name = match path.strip_prefix('/') {
            Some(p) => no_nul(percent_decode(p, "export name")?, "export name")?,
            None => String::new(),
        };

        let mut parsed = NbdUri::new(Transport::Unix {
            socket: String::new(),
        });
        parsed.tls = tls;
        parsed.username = username;
        parsed.export_name = export_name;
        let mut socket = None;
        let mut nbd_port = None;
        for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let key = percent_decode(key, "query")?;
            let value = percent_decode(value, "query")?;
            match key.as_str() {
                // The spec allows a leading NUL here (abstract sockets).
                "socket" => socket = Some(value),
                "tls-certificates" => parsed.tls_certificates = Some(no_nul(value, &key)?),
                "tls-psk-file" => parsed.tls_psk_file = Some(no_nul(value, &key)?),
                "tls-username" => parsed.tls_username = Some(no_nul(value, &key)?),
                "tls-verify-peer" => parsed.tls_verify_peer = Some(parse_bool(&value, &key)?),
                "tls-hostname" => parsed.tls_hostname = Some(no_nul(value, &key)?),
                "tls-priority" => parsed.tls_priority = Some(no_nul(value, &key)?),
                "compress" => parsed.compress = Some(parse_bool(&value, &key)?),
                "nbd-port" => nbd_port = Some(value),
                _ => parsed.unknown_params.push((key, value)),
            }
        }

        if !matches!(kind, Kind::Unix | Kind::Ssh) && socket.is_some() {
            return err(format!(
                "the socket parameter only goes with the +unix and +ssh schemes, not {scheme:?}"
            ));
        }
        let port = nbd_port.as_deref().filter(|_| kind != Kind::Ssh).or(port);
        parsed.transport = match kind {
            Kind::Tcp => Transport::Tcp {
                host: if host.is_empty() {
                    "localhost".to_string()
                } else {
                    host
                },
                port: match port {
                    Some(p) => parse_number(p, "port")?,
                    None => DEFAULT_PORT,
                },
            },
            Kind::Unix => match socket {
                Some(socket) if !socket.is_empty() => Transport::Unix { socket },
                _ => return err("a +unix URI needs a socket parameter (\"?socket=PATH\")"),
            },
            Kind::Vsock => Transport::Vsock {
                cid: if host.is_empty() {
                    DEFAULT_VSOCK_CID
                } else {
                    parse_number(&host, "vsock CID")?
                },
                port: match port {
                    Some(p) => parse_number(p, "vsock port")?,
                    None => u32::from(DEFAULT_PORT),
                },
            },
            Kind::Ssh => {
                if host.is_empty() {
                    return err("an +ssh URI needs the ssh server's name");
                }
                Transport::Ssh {
                    host,
                    port: match port {
                        Some(p) => parse_number(p, "ssh port")?,
                        None => DEFAULT_SSH_PORT,
                    },
                    nbd_port: match nbd_port.as_deref() {
                        Some(p) => parse_number(p, "nbd-port")?,
                        None => DEFAULT_PORT,
                    },
                    socket: socket.filter(|s| !s.is_empty()),
                }
            }
        };
        Ok(parsed)
    }

    /// The scheme name of this URI ("nbds+unix", ...).
    pub fn scheme(&self) -> &'static str {
        match (&self.transport, self.tls) {
            (Transport::Tcp { .. }, false) => "nbd",
            (Transport::Tcp { .. }, true) => "nbds",
            (Transport::Unix { .. }, false) => "nbd+unix",
            (Transport::Unix { .. }, true) => "nbds+unix",
            (Transport::Vsock { .. }, false) => "nbd+vsock",
            (Transport::Vsock { .. }, true) => "nbds+vsock",
            (Transport::Ssh { .. }, false) => "nbd+ssh",
            (Transport::Ssh { .. }, true) => "nbds+ssh",
        }
    }

    /// Builds the URI string; [`NbdUri::parse`] gives back an equal value
    /// (unknown parameters are written too).
    pub fn to_uri_string(&self) -> String {
        // Characters that need no escape, beyond letters, digits and "-._~".
        const SUB_DELIMS: &str = "!$&'()*+,;=";
        const PATH_EXTRA: &str = "!$&'()*+,;=:@/";
        const QUERY_EXTRA: &str = "!$'()*,;:@/";

        let mut out = format!("{}://", self.scheme());
        if let Some(user) = &self.username {
            out.push_str(&percent_encode(user, SUB_DELIMS));
            out.push('@');
        }
        let mut query: Vec<(String, String)> = Vec::new();
        let host_port = |out: &mut String, host: &str, port: u16, default: u16| {
            if host.contains(':') {
                out.push('[');
                out.push_str(host);
                out.push(']');
            } else {
                out.push_str(&percent_encode(host, SUB_DELIMS));
            }
            if port != default {
                out.push_str(&format!(":{port}"));
            }
        };
        match &self.transport {
            Transport::Tcp { host, port } => host_port(&mut out, host, *port, DEFAULT_PORT),
            Transport::Ssh {
                host,
                port,
                nbd_port,
                socket,
            } => {
                host_port(&mut out, host, *port, DEFAULT_SSH_PORT);
                if let Some(socket) = socket {
                    query.push(("socket".into(), socket.clone()));
                }
                if *nbd_port != DEFAULT_PORT {
                    query.push(("nbd-port".into(), nbd_port.to_string()));
                }
            }
            Transport::Unix { socket } => query.push(("socket".into(), socket.clone())),
            Transport::Vsock { cid, port } => {
                out.push_str(&cid.to_string());
                if *port != u32::from(DEFAULT_PORT) {
                    out.push_str(&format!(":{port}"));
                }
            }
        }
        out.push('/');
        out.push_str(&percent_encode(&self.export_name, PATH_EXTRA));

        let known = [
            ("tls-certificates", self.tls_certificates.clone()),
            ("tls-psk-file", self.tls_psk_file.clone()),
            ("tls-username", self.tls_username.clone()),
            (
                "tls-verify-peer",
                self.tls_verify_peer
                    .map(|v| if v { "1" } else { "0" }.to_string()),
            ),
            ("tls-hostname", self.tls_hostname.clone()),
            ("tls-priority", self.tls_priority.clone()),
            (
                "compress",
                self.compress.map(|v| if v { "1" } else { "0" }.to_string()),
            ),
        ];
        for (key, value) in known {
            if let Some(value) = value {
                query.push((key.to_string(), value));
            }
        }
        query.extend(self.unknown_params.iter().cloned());
        for (i, (key, value)) in query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(key, QUERY_EXTRA));
            out.push('=');
            out.push_str(&percent_encode(value, QUERY_EXTRA));
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Unix,
    Vsock,
    Ssh,
}

/// The transport and TLS of a scheme (case-insensitive), if it is an NBD one.
fn scheme_kind(scheme: &str) -> Option<(Kind, bool)> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "nbd" => (Kind::Tcp, false),
        "nbds" => (Kind::Tcp, true),
        "nbd+unix" => (Kind::Unix, false),
        "nbds+unix" => (Kind::Unix, true),
        "nbd+vsock" => (Kind::Vsock, false),
        "nbds+vsock" => (Kind::Vsock, true),
        "nbd+ssh" => (Kind::Ssh, false),
        "nbds+ssh" => (Kind::Ssh, true),
        _ => return None,
    })
}

/// `nbd_is_uri`'s heuristic: an NBD scheme (any case) followed by `://`.
/// The rest is not looked at.
pub fn looks_like_uri(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(scheme, _)| scheme_kind(scheme).is_some())
}

/// Escapes every byte except letters, digits, `-._~` and those in `extra`.
fn percent_encode(s: &str, extra: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || extra.as_bytes().contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Transport {
        Transport::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn plain_tcp() {
        let u = NbdUri::parse("nbd://example.com").unwrap();
        assert!(!u.tls);
        assert_eq!(u.transport, tcp("example.com", 10809));
        assert_eq!(u.export_name, "");
        assert_eq!(u.username, None);
    }

    #[test]
    fn tls_port_and_export() {
        let u = NbdUri::parse("nbds://example.com:1234/disk").unwrap();
        assert!(u.tls);
        assert_eq!(u.transport, tcp("example.com", 1234));
        assert_eq!(u.export_name, "disk");
    }

    #[test]
    fn export_names_from_the_spec() {
        for (uri, name) in [
            ("nbd://example.com/disk", "disk"),
            ("nbd+unix:///disk?socket=sock", "disk"),
            ("nbd://example.com/", ""),
            ("nbd://example.com", ""),
            ("nbd://example.com//disk", "/disk"),
            ("nbd://example.com/hello%20world", "hello world"),
        ] {
            assert_eq!(NbdUri::parse(uri).unwrap().export_name, name, "{uri}");
        }
    }

    #[test]
    fn empty_host_is_localhost() {
        let u = NbdUri::parse("nbd:///").unwrap();
        assert_eq!(u.transport, tcp("localhost", 10809));
    }

    #[test]
    fn ipv6_literal() {
        let u = NbdUri::parse("nbd://[::1]:99/e%20x").unwrap();
        assert_eq!(u.transport, tcp("::1", 99));
        assert_eq!(u.export_name, "e x");
        let u = NbdUri::parse("nbd://[fe80::1]/").unwrap();
        assert_eq!(u.transport, tcp("fe80::1", 10809));
        assert!(NbdUri::parse("nbd://[::1/").is_err());
        assert!(NbdUri::parse("nbd://[::1]x/").is_err());
    }

    #[test]
    fn unix_socket() {
        let u = NbdUri::parse("nbds+unix://alice@/?socket=/tmp/nbd.sock&tls-certificates=certs")
            .unwrap();
        assert!(u.tls);
        assert_eq!(
            u.transport,
            Transport::Unix {
                socket: "/tmp/nbd.sock".into()
            }
        );
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.tls_certificates.as_deref(), Some("certs"));
        let u = NbdUri::parse("nbd+unix:///?socket=%00/abstract").unwrap();
        assert_eq!(
            u.transport,
            Transport::Unix {
                socket: "\0/abstract".into()
            }
        );
    }

    #[test]
    fn unix_needs_socket_and_tcp_refuses_it() {
        assert!(NbdUri::parse("nbd+unix:///e").is_err());
        assert!(NbdUri::parse("nbd+unix:///e?socket=").is_err());
        assert!(NbdUri::parse("nbd://h/?socket=/s").is_err());
        assert!(NbdUri::parse("nbd+vsock:///?socket=/s").is_err());
    }

    #[test]
    fn vsock() {
        let u = NbdUri::parse("nbd+vsock:///").unwrap();
        assert_eq!(
            u.transport,
            Transport::Vsock {
                cid: 2,
                port: 10809
            }
        );
        let u = NbdUri::parse("nbds+vsock://3:99/x").unwrap();
        assert!(u.tls);
        assert_eq!(u.transport, Transport::Vsock { cid: 3, port: 99 });
        assert!(NbdUri::parse("nbd+vsock://abc/").is_err());
    }

    #[test]
    fn tls_query_parameters() {
        let u = NbdUri::parse(
            "nbds://h/?tls-psk-file=/k.psk&tls-username=bob&tls-verify-peer=false&x-foo=1",
        )
        .unwrap();
        assert_eq!(u.tls_psk_file.as_deref(), Some("/k.psk"));
        assert_eq!(u.tls_username.as_deref(), Some("bob"));
        assert_eq!(u.tls_verify_peer, Some(false));
        assert_eq!(
            u.unknown_params,
            vec![("x-foo".to_string(), "1".to_string())]
        );
        assert!(NbdUri::parse("nbds://h/?tls-verify-peer=maybe").is_err());
    }

    #[test]
    fn user_info_is_decoded() {
        let u = NbdUri::parse("nbd://u%40x:secret@h/").unwrap();
        assert_eq!(u.username.as_deref(), Some("u@x"));
        assert_eq!(u.transport, tcp("h", 10809));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://x/",
            "nbd:h",
            "nbd://h:abc/",
            "nbd://h:70000/",
            "nbd://h/%zz",
            "nbd://h/%4",
            "nbd://h/%+f",
            "nbd://h/a%00b",
            "nbd://h/%ff",
            "",
        ] {
            assert!(NbdUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive_and_fragment_ignored() {
        let u = NbdUri::parse("NBD://h/x#frag").unwrap();
        assert_eq!(u.export_name, "x");
    }

    #[test]
    fn builds_what_it_parses() {
        for uri in [
            "nbd://example.com/",
            "nbds://example.com:1234/disk",
            "nbd://[::1]:99/e%20x",
            "nbd+unix:///foo?socket=/tmp/nbd.sock",
            "nbds+unix://alice@/?socket=/tmp/nbd.sock&tls-certificates=certs",
            "nbd+vsock://3:99/x",
            "nbd://h/hi%0A%22x%5C?tls-verify-peer=1&x-y=a%26b",
        ] {
            let parsed = NbdUri::parse(uri).unwrap();
            assert_eq!(parsed.to_uri_string(), uri);
            assert_eq!(NbdUri::parse(&parsed.to_uri_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn builder_escapes() {
        let u = NbdUri {
            tls: false,
            transport: Transport::Unix {
                socket: "/tmp/a b&c".into(),
            },
            username: Some("bob".into()),
            export_name: "hi\n\"x\\".into(),
            tls_certificates: None,
            tls_psk_file: None,
            tls_username: None,
            tls_verify_peer: None,
            tls_hostname: None,
            tls_priority: None,
            compress: None,
            unknown_params: vec![],
        };
        let s = u.to_uri_string();
        assert_eq!(s, "nbd+unix://bob@/hi%0A%22x%5C?socket=/tmp/a%20b%26c");
        assert_eq!(NbdUri::parse(&s).unwrap(), u);
    }

    #[test]
    fn libnbd_1_24_parameters() {
        let u = NbdUri::parse(
            "nbds://h:1/?tls-hostname=a&tls-hostname=b&tls-priority=NORMAL:-VERS-TLS1.3\
             &nbd-port=1234&compress=yes",
        )
        .unwrap();
        assert_eq!(u.tls_hostname.as_deref(), Some("b"), "the last one wins");
        assert_eq!(u.tls_priority.as_deref(), Some("NORMAL:-VERS-TLS1.3"));
        assert_eq!(u.transport, tcp("h", 1234), "nbd-port overrides the port");
        assert_eq!(u.compress, Some(true));
        let u = NbdUri::parse("nbd+vsock://3/?nbd-port=4294967295").unwrap();
        assert_eq!(
            u.transport,
            Transport::Vsock {
                cid: 3,
                port: u32::MAX
            }
        );
        // Ignored for Unix sockets, as in libnbd.
        let u = NbdUri::parse("nbd+unix:///?socket=/s&nbd-port=x").unwrap();
        assert_eq!(
            u.transport,
            Transport::Unix {
                socket: "/s".into()
            }
        );
        for bad in [
            "nbd://h/?nbd-port=abc",
            "nbd://h/?nbd-port=65536",
            "nbd://h/?nbd-port=",
            "nbd://h/?compress=maybe",
            "nbd://h/?tls-hostname=a%00b",
        ] {
            assert!(NbdUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_uris() {
        let u = NbdUri::parse("NBDS+SSH://bob@server:2222/exp?nbd-port=99&socket=/r/s").unwrap();
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.export_name, "exp");
        assert_eq!(
            u.transport,
            Transport::Ssh {
                host: "server".into(),
                port: 2222,
                nbd_port: 99,
                socket: Some("/r/s".into())
            }
        );
        let u = NbdUri::parse("nbd+ssh://[fe80::1]/").unwrap();
        assert_eq!(
            u.transport,
            Transport::Ssh {
                host: "fe80::1".into(),
                port: 22,
                nbd_port: 10809,
                socket: None
            }
        );
        assert!(NbdUri::parse("nbd+ssh:///").is_err(), "a server is needed");
        assert!(NbdUri::parse("nbd+ssh://h:99999/").is_err());
        for uri in [
            "nbd+ssh://server/",
            "nbds+ssh://bob@server:2222/exp?socket=/r/s&nbd-port=99&compress=1",
            "nbd+ssh://[::1]:23/",
        ] {
            let parsed = NbdUri::parse(uri).unwrap();
            assert_eq!(parsed.to_uri_string(), uri);
        }
    }

    #[test]
    fn is_uri_heuristic() {
        for yes in ["nbd://x", "NBD+SSH://x", "nbds+vsock://", "nbd:///"] {
            assert!(looks_like_uri(yes), "{yes}");
        }
        for no in [
            "nbd:x",
            "nbd:/",
            "nbd",
            "",
            "http://x",
            "nbd+foo://",
            " nbd://",
            "x nbd://",
        ] {
            assert!(!looks_like_uri(no), "{no}");
        }
    }
}
