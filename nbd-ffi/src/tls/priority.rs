//! GnuTLS priority strings (`nbd_set_tls_priority`, the `tls-priority` URI
//! parameter) mapped onto OpenSSL.
//!
//! libnbd hands the string to GnuTLS. This library uses OpenSSL, so it
//! understands the part of the syntax that has an OpenSSL equivalent and
//! refuses the rest with `EINVAL` when the string is set (or when a URI
//! carrying it is connected), never silently. The supported subset:
//!
//! * The string is `KEYWORD[:ITEM...]`, items separated by `:`, keywords and
//!   items case-insensitive. An empty string means `NORMAL`.
//! * Keywords: `NORMAL` and `PERFORMANCE` alone leave OpenSSL's defaults
//!   (TLS 1.2 and 1.3); followed by items they start from every version,
//!   cipher, MAC and group listed below and the X.509 key exchanges (`RSA`,
//!   `DHE-RSA`, `ECDHE-RSA`, `ECDHE-ECDSA`). `SECURE128` is that same set
//!   (every cipher in it has keys of at least 128 bits), `PFS` the set
//!   without static `RSA` key exchange, `SECURE192` and `SECURE256` the set
//!   cut down to 256-bit ciphers, AEAD or SHA-384 MACs and the groups P-384,
//!   P-521, X448 and ffdhe8192. `NONE` is the empty set: add what is wanted
//!   with `+` items. Refused: `LEGACY`, `SUITEB128`, `SUITEB192`, `SYSTEM`
//!   and `@NAME` (which would read a system-wide configuration file).
//! * `+ITEM` adds, `-ITEM` and `!ITEM` remove:
//!   - versions `VERS-TLS1.2`, `VERS-TLS1.3`, `VERS-TLS-ALL`, `VERS-ALL`
//!     (TLS 1.2 and 1.3 only: `+VERS-TLS1.0`, `1.1`, `SSL3.0` and DTLS are
//!     refused, removing them is accepted and changes nothing);
//!   - ciphers `AES-128-GCM`, `AES-256-GCM`, `CHACHA20-POLY1305`,
//!     `AES-128-CCM`, `AES-256-CCM`, `AES-128-CBC`, `AES-256-CBC`,
//!     `CIPHER-ALL`;
//!   - key exchange `RSA`, `DHE-RSA`, `ECDHE-RSA`, `ECDHE-ECDSA`, `PSK`,
//!     `DHE-PSK`, `ECDHE-PSK`, `KX-ALL`;
//!   - MACs `AEAD` (needed for TLS 1.3), `SHA1`, `SHA256`, `SHA384`,
//!     `MAC-ALL`;
//!   - groups `GROUP-X25519`, `GROUP-X448`, `GROUP-SECP256R1`,
//!     `GROUP-SECP384R1`, `GROUP-SECP521R1`, `GROUP-FFDHE2048` ... `8192`,
//!     `GROUP-ALL`, and the `CURVE-` names of the elliptic ones;
//!   - accepted without effect: `+SIGN-ALL`, `+CTYPE-ALL`, `+CTYPE-X509`,
//!     `±COMP-NULL`, `±COMP-ALL`; removing weak algorithms this library
//!     never offers (`VERS-TLS1.0`, `3DES-CBC`, `ARCFOUR-128`, the
//!     `CAMELLIA` ciphers, `AES-*-CCM-8`, `MD5`, `DHE-DSS`, `ANON-DH`,
//!     `ANON-ECDH`, `SRP`, `RSA-PSK`, other `COMP-`...) is accepted too;
//!     anything else (other `SIGN-` items, `-SIGN-ALL`, unknown names) is
//!     refused.
//! * Flags: `%COMPAT` and `%SERVER_PRECEDENCE` (no effect on a client),
//!   `%NO_TICKETS` (no session tickets).
//!
//! The result becomes OpenSSL's minimum and maximum protocol version, its
//! TLS 1.2 cipher list (suites named one by one, in this library's order of
//! preference, not the string's), its TLS 1.3 cipher suites and, when
//! groups were named, its groups list. As libnbd does for GnuTLS, a
//! connection with pre-shared keys adds the PSK key exchanges (`ECDHE-PSK`,
//! `DHE-PSK`, `PSK`) and uses only those. A string that leaves nothing to
//! negotiate is refused when set; one that leaves nothing for the kind of
//! credentials in use (X.509 or PSK) fails the connection.

use openssl::ssl::{SslContextBuilder, SslOptions, SslVersion};

const V12: u8 = 1;
const V13: u8 = 2;

// Ciphers.
const AES128GCM: u8 = 1;
const AES256GCM: u8 = 2;
const CHACHA: u8 = 4;
const AES128CCM: u8 = 8;
const AES256CCM: u8 = 16;
const AES128CBC: u8 = 32;
const AES256CBC: u8 = 64;
const ALL_CIPHERS: u8 = 127;

// Key exchange.
const RSA: u8 = 1;
const DHE_RSA: u8 = 2;
const ECDHE_RSA: u8 = 4;
const ECDHE_ECDSA: u8 = 8;
const PSK: u8 = 16;
const DHE_PSK: u8 = 32;
const ECDHE_PSK: u8 = 64;
const CERT_KX: u8 = RSA | DHE_RSA | ECDHE_RSA | ECDHE_ECDSA;
const PSK_KX: u8 = PSK | DHE_PSK | ECDHE_PSK;
const ALL_KX: u8 = CERT_KX | PSK_KX;

// MACs.
const AEAD: u8 = 1;
const SHA1: u8 = 2;
const SHA256: u8 = 4;
const SHA384: u8 = 8;
const ALL_MACS: u8 = 15;

/// Groups, in OpenSSL's names, by bit.
const GROUPS: &[(&str, &str)] = &[
    ("X25519", "X25519"),
    ("SECP256R1", "P-256"),
    ("X448", "X448"),
    ("SECP384R1", "P-384"),
    ("SECP521R1", "P-521"),
    ("FFDHE2048", "ffdhe2048"),
    ("FFDHE3072", "ffdhe3072"),
    ("FFDHE4096", "ffdhe4096"),
    ("FFDHE6144", "ffdhe6144"),
    ("FFDHE8192", "ffdhe8192"),
];
const ALL_GROUPS: u16 = (1 << 10) - 1;
const EC_GROUPS: u16 = 0b11111;
const STRONG_GROUPS: u16 = 1 << 2 | 1 << 3 | 1 << 4 | 1 << 9;

/// TLS 1.2 suites: OpenSSL name, key exchange, cipher, MAC; in order of
/// preference (forward secrecy and AEAD first).
const TLS12: &[(&str, u8, u8, u8)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        ECDHE_ECDSA,
        AES256GCM,
        AEAD,
    ),
    ("ECDHE-RSA-AES256-GCM-SHA384", ECDHE_RSA, AES256GCM, AEAD),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", ECDHE_ECDSA, CHACHA, AEAD),
    ("ECDHE-RSA-CHACHA20-POLY1305", ECDHE_RSA, CHACHA, AEAD),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        ECDHE_ECDSA,
        AES128GCM,
        AEAD,
    ),
    ("ECDHE-RSA-AES128-GCM-SHA256", ECDHE_RSA, AES128GCM, AEAD),
    ("ECDHE-ECDSA-AES256-CCM", ECDHE_ECDSA, AES256CCM, AEAD),
    ("ECDHE-ECDSA-AES128-CCM", ECDHE_ECDSA, AES128CCM, AEAD),
    ("DHE-RSA-AES256-GCM-SHA384", DHE_RSA, AES256GCM, AEAD),
    ("DHE-RSA-CHACHA20-POLY1305", DHE_RSA, CHACHA, AEAD),
    ("DHE-RSA-AES128-GCM-SHA256", DHE_RSA, AES128GCM, AEAD),
    ("DHE-RSA-AES256-CCM", DHE_RSA, AES256CCM, AEAD),
    ("DHE-RSA-AES128-CCM", DHE_RSA, AES128CCM, AEAD),
    ("ECDHE-ECDSA-AES256-SHA384", ECDHE_ECDSA, AES256CBC, SHA384),
    ("ECDHE-RSA-AES256-SHA384", ECDHE_RSA, AES256CBC, SHA384),
    ("ECDHE-ECDSA-AES128-SHA256", ECDHE_ECDSA, AES128CBC, SHA256),
    ("ECDHE-RSA-AES128-SHA256", ECDHE_RSA, AES128CBC, SHA256),
    ("DHE-RSA-AES256-SHA256", DHE_RSA, AES256CBC, SHA256),
    ("DHE-RSA-AES128-SHA256", DHE_RSA, AES128CBC, SHA256),
    ("ECDHE-ECDSA-AES256-SHA", ECDHE_ECDSA, AES256CBC, SHA1),
    ("ECDHE-RSA-AES256-SHA", ECDHE_RSA, AES256CBC, SHA1),
    ("ECDHE-ECDSA-AES128-SHA", ECDHE_ECDSA, AES128CBC, SHA1),
    ("ECDHE-RSA-AES128-SHA", ECDHE_RSA, AES128CBC, SHA1),
    ("DHE-RSA-AES256-SHA", DHE_RSA, AES256CBC, SHA1),
    ("DHE-RSA-AES128-SHA", DHE_RSA, AES128CBC, SHA1),
    ("AES256-GCM-SHA384", RSA, AES256GCM, AEAD),
    ("AES128-GCM-SHA256", RSA, AES128GCM, AEAD),
    ("AES256-CCM", RSA, AES256CCM, AEAD),
    ("AES128-CCM", RSA, AES128CCM, AEAD),
    ("AES256-SHA256", RSA, AES256CBC, SHA256),
    ("AES128-SHA256", RSA, AES128CBC, SHA256),
    ("AES256-SHA", RSA, AES256CBC, SHA1),
    ("AES128-SHA", RSA, AES128CBC, SHA1),
    ("ECDHE-PSK-CHACHA20-POLY1305", ECDHE_PSK, CHACHA, AEAD),
    ("ECDHE-PSK-AES256-CBC-SHA384", ECDHE_PSK, AES256CBC, SHA384),
    ("ECDHE-PSK-AES128-CBC-SHA256", ECDHE_PSK, AES128CBC, SHA256),
    ("ECDHE-PSK-AES256-CBC-SHA", ECDHE_PSK, AES256CBC, SHA1),
    ("ECDHE-PSK-AES128-CBC-SHA", ECDHE_PSK, AES128CBC, SHA1),
    ("DHE-PSK-AES256-GCM-SHA384", DHE_PSK, AES256GCM, AEAD),
    ("DHE-PSK-CHACHA20-POLY1305", DHE_PSK, CHACHA, AEAD),
    ("DHE-PSK-AES128-GCM-SHA256", DHE_PSK, AES128GCM, AEAD),
    ("DHE-PSK-AES256-CCM", DHE_PSK, AES256CCM, AEAD),
    ("DHE-PSK-AES128-CCM", DHE_PSK, AES128CCM, AEAD),
    ("DHE-PSK-AES256-CBC-SHA384", DHE_PSK, AES256CBC, SHA384),
    ("DHE-PSK-AES128-CBC-SHA256", DHE_PSK, AES128CBC, SHA256),
    ("DHE-PSK-AES256-CBC-SHA", DHE_PSK, AES256CBC, SHA1),
    ("DHE-PSK-AES128-CBC-SHA", DHE_PSK, AES128CBC, SHA1),
    ("PSK-AES256-GCM-SHA384", PSK, AES256GCM, AEAD),
    ("PSK-CHACHA20-POLY1305", PSK, CHACHA, AEAD),
    ("PSK-AES128-GCM-SHA256", PSK, AES128GCM, AEAD),
    ("PSK-AES256-CCM", PSK, AES256CCM, AEAD),
    ("PSK-AES128-CCM", PSK, AES128CCM, AEAD),
    ("PSK-AES256-CBC-SHA384", PSK, AES256CBC, SHA384),
    ("PSK-AES128-CBC-SHA256", PSK, AES128CBC, SHA256),
    ("PSK-AES256-CBC-SHA", PSK, AES256CBC, SHA1),
    ("PSK-AES128-CBC-SHA", PSK, AES128CBC, SHA1),
];

/// TLS 1.3 suites (all AEAD) and their cipher.
const TLS13: &[(&str, u8)] = &[
    ("TLS_AES_256_GCM_SHA384", AES256GCM),
    ("TLS_CHACHA20_POLY1305_SHA256", CHACHA),
    ("TLS_AES_128_GCM_SHA256", AES128GCM),
    ("TLS_AES_128_CCM_SHA256", AES128CCM),
];

/// Items that name something this library never offers: removing them is
/// fine, asking for them is refused.
const NEVER_OFFERED: &[&str] = &[
    "VERS-TLS1.0",
    "VERS-TLS1.1",
    "VERS-SSL3.0",
    "VERS-DTLS0.9",
    "VERS-DTLS1.0",
    "VERS-DTLS1.2",
    "VERS-DTLS-ALL",
    "3DES-CBC",
    "ARCFOUR-128",
    "ARCFOUR-40",
    "RC2-40",
    "DES-CBC",
    "NULL",
    "CAMELLIA-128-CBC",
    "CAMELLIA-256-CBC",
    "CAMELLIA-128-GCM",
    "CAMELLIA-256-GCM",
    "AES-128-CCM-8",
    "AES-256-CCM-8",
    "GOST28147-TC26Z-CNT",
    "MD5",
    "GOST28147-TC26Z-IMIT",
    "DHE-DSS",
    "ANON-DH",
    "ANON-ECDH",
    "SRP",
    "SRP-RSA",
    "SRP-DSS",
    "RSA-PSK",
    "RSA-EXPORT",
    "VKO-GOST-12",
];

/// A priority string, understood: what OpenSSL is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Priority {
    /// `NORMAL` or `PERFORMANCE` alone: leave OpenSSL's defaults.
    default: bool,
    versions: u8,
    ciphers: u8,
    kx: u8,
    macs: u8,
    groups: u16,
    /// Groups were named: set OpenSSL's list (else keep its default).
    groups_set: bool,
    no_tickets: bool,
}

enum Item {
    Versions(u8),
    Ciphers(u8),
    Kx(u8),
    Macs(u8),
    Groups(u16),
    /// Accepted, nothing to do (`+` and `-` alike).
    Nothing,
    /// Only `+` is accepted, without effect.
    AddOnly,
    /// Only removing is accepted, without effect.
    RemoveOnly,
}

fn item(name: &str) -> Option<Item> {
    let n = name.to_ascii_uppercase();
    if let Some(g) = n
        .strip_prefix("GROUP-")
        .or_else(|| n.strip_prefix("CURVE-"))
    {
        let curve = n.starts_with("CURVE-");
        if g == "ALL" {
            return Some(Item::Groups(if curve { EC_GROUPS } else { ALL_GROUPS }));
        }
        let i = GROUPS.iter().position(|(gn, _)| *gn == g)?;
        if curve && (1u16 << i) & EC_GROUPS == 0 {
            return None;
        }
        return Some(Item::Groups(1 << i));
    }
    Some(match n.as_str() {
        "VERS-TLS1.2" => Item::Versions(V12),
        "VERS-TLS1.3" => Item::Versions(V13),
        "VERS-TLS-ALL" | "VERS-ALL" => Item::Versions(V12 | V13),
        "AES-128-GCM" => Item::Ciphers(AES128GCM),
        "AES-256-GCM" => Item::Ciphers(AES256GCM),
        "CHACHA20-POLY1305" => Item::Ciphers(CHACHA),
        "AES-128-CCM" => Item::Ciphers(AES128CCM),
        "AES-256-CCM" => Item::Ciphers(AES256CCM),
        "AES-128-CBC" => Item::Ciphers(AES128CBC),
        "AES-256-CBC" => Item::Ciphers(AES256CBC),
        "CIPHER-ALL" => Item::Ciphers(ALL_CIPHERS),
        "RSA" => Item::Kx(RSA),
        "DHE-RSA" => Item::Kx(DHE_RSA),
        "ECDHE-RSA" => Item::Kx(ECDHE_RSA),
        "ECDHE-ECDSA" => Item::Kx(ECDHE_ECDSA),
        "PSK" => Item::Kx(PSK),
        "DHE-PSK" => Item::Kx(DHE_PSK),
        "ECDHE-PSK" => Item::Kx(ECDHE_PSK),
        "KX-ALL" => Item::Kx(ALL_KX),
        "AEAD" => Item::Macs(AEAD),
        "SHA1" => Item::Macs(SHA1),
        "SHA256" => Item::Macs(SHA256),
        "SHA384" => Item::Macs(SHA384),
        "MAC-ALL" => Item::Macs(ALL_MACS),
        "COMP-NULL" | "COMP-ALL" => Item::Nothing,
        "SIGN-ALL" | "CTYPE-ALL" | "CTYPE-X509" => Item::AddOnly,
        _ if NEVER_OFFERED.contains(&n.as_str()) || n.starts_with("COMP-") => Item::RemoveOnly,
        _ => return None,
    })
}

impl Priority {
    fn base(keyword: &str) -> Result<Priority, String> {
        let normal = Priority {
            default: false,
            versions: V12 | V13,
            ciphers: ALL_CIPHERS,
            kx: CERT_KX,
            macs: ALL_MACS,
            groups: ALL_GROUPS,
            groups_set: false,
            no_tickets: false,
        };
        Ok(match keyword.to_ascii_uppercase().as_str() {
            "" | "NORMAL" | "PERFORMANCE" => Priority {
                default: true,
                ..normal
            },
            "SECURE128" => normal,
            "PFS" => Priority {
                kx: CERT_KX & !RSA,
                ..normal
            },
            "SECURE192" | "SECURE256" => Priority {
                ciphers: AES256GCM | CHACHA | AES256CCM | AES256CBC,
                macs: AEAD | SHA384,
                groups: STRONG_GROUPS,
                groups_set: true,
                ..normal
            },
            "NONE" => Priority {
                versions: 0,
                ciphers: 0,
                kx: 0,
                macs: 0,
                groups: 0,
                groups_set: true,
                ..normal
            },
            k if k.starts_with('@') => {
                return Err(format!(
                    "TLS priority {keyword:?}: system-wide priority configurations \
                     (@KEYWORD) are not supported by this library"
                ))
            }
            _ => {
                return Err(format!(
                    "TLS priority keyword {keyword:?} is not supported by this library \
                     (it maps NORMAL, PERFORMANCE, PFS, SECURE128, SECURE192, SECURE256 \
                     and NONE onto OpenSSL)"
                ))
            }
        })
    }

    /// Parses a priority string, refusing what cannot be mapped (the
    /// message says what and why).
    pub(crate) fn parse(text: &str) -> Result<Priority, String> {
        let mut parts = text.split(':');
        let mut p = Priority::base(parts.next().unwrap_or("").trim())?;
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some(flag) = part.strip_prefix('%') {
                match flag.to_ascii_uppercase().as_str() {
                    "COMPAT" | "SERVER_PRECEDENCE" => {}
                    "NO_TICKETS" => p.no_tickets = true,
                    _ => {
                        return Err(format!(
                            "TLS priority flag {part:?} is not supported by this library"
                        ))
                    }
                }
                p.default = false;
                continue;
            }
            let (add, name) = match part.as_bytes()[0] {
                b'+' => (true, &part[1..]),
                b'-' | b'!' => (false, &part[1..]),
                _ => {
                    return Err(format!(
                        "TLS priority item {part:?} must start with '+', '-', '!' or '%' \
                         (only the first item is a keyword)"
                    ))
                }
            };
            let unsupported = || {
                format!(
                    "TLS priority item {part:?} is not supported by this library \
                     (OpenSSL, TLS 1.2 and 1.3)"
                )
            };
            let it = item(name).ok_or_else(unsupported)?;
            let change = |set: &mut u8, bits: u8| {
                if add {
                    *set |= bits
                } else {
                    *set &= !bits
                }
            };
            match it {
                Item::Versions(b) => change(&mut p.versions, b),
                Item::Ciphers(b) => change(&mut p.ciphers, b),
                Item::Kx(b) => change(&mut p.kx, b),
                Item::Macs(b) => change(&mut p.macs, b),
                Item::Groups(b) => {
                    if add {
                        p.groups |= b
                    } else {
                        p.groups &= !b
                    }
                    p.groups_set = true;
                }
                Item::Nothing => {}
                Item::AddOnly if add => {}
                Item::RemoveOnly if !add => {}
                Item::AddOnly | Item::RemoveOnly => return Err(unsupported()),
            }
            p.default = false;
        }
        if !p.default {
            if p.versions == 0 {
                return Err(format!(
                    "TLS priority {text:?} enables no TLS version (this library speaks \
                     TLS 1.2 and 1.3: add +VERS-TLS1.2 or +VERS-TLS1.3)"
                ));
            }
            if p.groups_set && p.groups == 0 {
                return Err(format!(
                    "TLS priority {text:?} enables no key exchange group"
                ));
            }
            let tls13 = !p.tls13_suites().is_empty();
            let tls12 = !p.tls12_suites(false).is_empty() || !p.tls12_suites(true).is_empty();
            if !tls13 && !tls12 {
                return Err(format!(
                    "TLS priority {text:?} leaves no cipher suite (a cipher, a MAC and, \
                     for TLS 1.2, a key exchange are needed)"
                ));
            }
        }
        Ok(p)
    }

    /// TLS 1.2 suites for X.509 (`psk` false) or pre-shared keys.
    fn tls12_suites(&self, psk: bool) -> Vec<&'static str> {
        if self.versions & V12 == 0 {
            return Vec::new();
        }
        // As libnbd does with GnuTLS: PSK sessions add every PSK exchange.
        let kx = if psk { PSK_KX } else { self.kx & CERT_KX };
        TLS12
            .iter()
            .filter(|(_, k, c, m)| kx & k != 0 && self.ciphers & c != 0 && self.macs & m != 0)
            .map(|(name, ..)| *name)
            .collect()
    }

    fn tls13_suites(&self) -> Vec<&'static str> {
        if self.versions & V13 == 0 || self.macs & AEAD == 0 {
            return Vec::new();
        }
        TLS13
            .iter()
            .filter(|(_, c)| self.ciphers & c != 0)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Configures an OpenSSL client context (`psk`: pre-shared keys, else
    /// X.509). Fails when nothing is left for this kind of session.
    pub(crate) fn apply(&self, b: &mut SslContextBuilder, psk: bool) -> Result<(), String> {
        if self.default {
            return Ok(());
        }
        let e =
            |what: &str, err: openssl::error::ErrorStack| format!("TLS priority: {what}: {err}");
        let tls12 = self.tls12_suites(psk);
        let tls13 = self.tls13_suites();
        let min = if !tls12.is_empty() {
            SslVersion::TLS1_2
        } else if !tls13.is_empty() {
            SslVersion::TLS1_3
        } else {
            return Err(format!(
                "the TLS priority string leaves no cipher suite for a session with {}",
                if psk {
                    "pre-shared keys"
                } else {
                    "certificates"
                }
            ));
        };
        let max = if tls13.is_empty() {
            SslVersion::TLS1_2
        } else {
            SslVersion::TLS1_3
        };
        b.set_min_proto_version(Some(min))
            .map_err(|x| e("version", x))?;
        b.set_max_proto_version(Some(max))
            .map_err(|x| e("version", x))?;
        if !tls12.is_empty() {
            b.set_cipher_list(&tls12.join(":"))
                .map_err(|x| e("TLS 1.2 ciphers", x))?;
        }
        if !tls13.is_empty() {
            b.set_ciphersuites(&tls13.join(":"))
                .map_err(|x| e("TLS 1.3 ciphers", x))?;
        }
        if self.groups_set {
            let names: Vec<&str> = GROUPS
                .iter()
                .enumerate()
                .filter(|(i, _)| self.groups & (1 << i) != 0)
                .map(|(_, (_, ossl))| *ossl)
                .collect();
            b.set_groups_list(&names.join(":"))
                .map_err(|x| e("groups", x))?;
        }
        if self.no_tickets {
            b.set_options(SslOptions::NO_TICKET);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::SslMethod;

    fn ctx(p: &Priority, psk: bool) -> Result<openssl::ssl::SslContext, String> {
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        p.apply(&mut b, psk)?;
        Ok(b.build())
    }

    /// The cipher suites a session would offer (after checking that OpenSSL
    /// takes the configuration).
    fn offered(p: &Priority, psk: bool) -> Vec<String> {
        ctx(p, psk).unwrap();
        let mut out: Vec<String> = p.tls12_suites(psk).iter().map(|s| s.to_string()).collect();
        out.extend(p.tls13_suites().iter().map(|s| s.to_string()));
        out
    }

    #[test]
    fn every_suite_in_the_tables_exists_in_openssl() {
        for (name, ..) in TLS12 {
            let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
            b.set_cipher_list(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for (name, _) in TLS13 {
            let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
            b.set_ciphersuites(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        let all: Vec<&str> = GROUPS.iter().map(|(_, o)| *o).collect();
        b.set_groups_list(&all.join(":")).unwrap();
    }

    #[test]
    fn defaults_leave_openssl_alone() {
        for s in ["", "NORMAL", "normal", "PERFORMANCE"] {
            let p = Priority::parse(s).unwrap();
            assert!(p.default, "{s}");
        }
        assert!(!Priority::parse("NORMAL:%COMPAT").unwrap().default);
    }

    #[test]
    fn versions_map_to_min_and_max() {
        let only13 = Priority::parse("NORMAL:-VERS-TLS1.2").unwrap();
        let list = offered(&only13, false);
        assert!(list.iter().all(|c| c.starts_with("TLS_")), "{list:?}");
        let only12 = Priority::parse("NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2").unwrap();
        let list = offered(&only12, false);
        assert!(list.iter().all(|c| !c.starts_with("TLS_")), "{list:?}");
        assert!(list.contains(&"ECDHE-RSA-AES128-GCM-SHA256".to_string()));
        // Removing old versions changes nothing; asking for them is refused.
        assert!(Priority::parse("NORMAL:-VERS-TLS1.0:-VERS-TLS1.1").is_ok());
        assert!(Priority::parse("NORMAL:+VERS-TLS1.0")
            .unwrap_err()
            .contains("not supported"));
        assert!(Priority::parse("NORMAL:-VERS-ALL")
            .unwrap_err()
            .contains("no TLS version"));
    }

    #[test]
    fn strength_keywords() {
        let p = Priority::parse("SECURE256").unwrap();
        let list = offered(&p, false);
        assert!(!list.is_empty());
        assert!(
            list.iter()
                .all(|c| c.contains("256") || c.contains("CHACHA")),
            "{list:?}"
        );
        let pfs = offered(&Priority::parse("PFS").unwrap(), false);
        assert!(!pfs.contains(&"AES128-GCM-SHA256".to_string()));
        assert!(offered(&Priority::parse("SECURE128").unwrap(), false)
            .contains(&"AES128-GCM-SHA256".to_string()));
    }

    #[test]
    fn none_plus_items() {
        let p =
            Priority::parse("NONE:+VERS-TLS1.3:+AES-256-GCM:+AEAD:+SIGN-ALL:+GROUP-ALL:+COMP-NULL")
                .unwrap();
        assert_eq!(offered(&p, false), ["TLS_AES_256_GCM_SHA384"]);
        let p = Priority::parse("NONE:+VERS-TLS1.2:+ECDHE-RSA:+AES-128-GCM:+AEAD:+GROUP-X25519")
            .unwrap();
        assert_eq!(offered(&p, false), ["ECDHE-RSA-AES128-GCM-SHA256"]);
        // With pre-shared keys the PSK exchanges come in, as in libnbd.
        let psk = offered(&p, true);
        assert!(!psk.contains(&"ECDHE-PSK-CHACHA20-POLY1305".to_string()));
        assert!(
            psk.contains(&"PSK-AES128-GCM-SHA256".to_string()),
            "{psk:?}"
        );
        assert!(psk.iter().all(|c| c.contains("PSK")), "{psk:?}");
        // NONE alone, or without a cipher: nothing to negotiate.
        assert!(Priority::parse("NONE").is_err());
        assert!(Priority::parse("NONE:+VERS-TLS1.3:+AEAD:+GROUP-ALL").is_err());
        assert!(Priority::parse("NORMAL:-GROUP-ALL").is_err());
    }

    #[test]
    fn a_string_without_psk_suites_fails_a_psk_session_at_connect() {
        // TLS 1.2 only, and a cipher and MAC no PSK suite has: fine for
        // certificates only.
        let p =
            Priority::parse("NONE:+VERS-TLS1.2:+DHE-RSA:+AES-256-CBC:+SHA256:+GROUP-ALL").unwrap();
        assert_eq!(offered(&p, false), ["DHE-RSA-AES256-SHA256"]);
        assert!(ctx(&p, false).is_ok());
        assert!(ctx(&p, true).unwrap_err().contains("pre-shared keys"));
    }

    #[test]
    fn refused() {
        for s in [
            "LEGACY",
            "SUITEB128",
            "@SYSTEM",
            "@LIBNBD,SYSTEM",
            "garbage",
            "NORMAL:+ARCFOUR-128",
            "NORMAL:+3DES-CBC",
            "NORMAL:+CAMELLIA-128-GCM",
            "NORMAL:+MD5",
            "NORMAL:+ANON-DH",
            "NORMAL:+SRP",
            "NORMAL:+RSA-PSK",
            "NORMAL:-SIGN-ALL",
            "NORMAL:+SIGN-RSA-SHA256",
            "NORMAL:%NO_EXTENSIONS",
            "NORMAL:%UNSAFE_RENEGOTIATION",
            "NORMAL:AES-128-GCM",
            "NORMAL:+WHATEVER",
            "NORMAL:+CURVE-FFDHE2048",
        ] {
            assert!(Priority::parse(s).is_err(), "{s}");
        }
        for s in [
            "NORMAL:-ARCFOUR-128:-3DES-CBC:-MD5:-CAMELLIA-128-CBC:!DHE-DSS:-COMP-DEFLATE",
            "NORMAL:%COMPAT:%SERVER_PRECEDENCE:%NO_TICKETS",
            "SECURE128:+VERS-TLS1.3:-VERS-TLS1.2",
            "NORMAL::+CURVE-SECP256R1",
        ] {
            assert!(Priority::parse(s).is_ok(), "{s}");
        }
    }
}
