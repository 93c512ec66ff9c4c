//! Certificates and keys for the TLS tests, made fresh in a temporary
//! directory with OpenSSL (the `openssl` crate): a CA, server certificates
//! (good, for another host name, expired, from an unknown CA), a client
//! certificate, and a pre-shared key file in psktool's format.
//!
//! Directory layout, in the shapes nbdkit (`--tls-certificates`), qemu-nbd
//! (`tls-creds-x509,dir=`, `tls-creds-psk,dir=`) and libnbd
//! (`nbd_set_tls_certificates`) expect:
//!
//! | dir | files | use |
//! |---|---|---|
//! | `server/` | ca-cert.pem, server-cert.pem (DNS:localhost), server-key.pem | a good server |
//! | `server-other-name/` | … for DNS:other.invalid | name mismatch |
//! | `server-expired/` | … valid in 2020 only | expired |
//! | `server-other-ca/` | … signed by an unrelated CA | unknown CA |
//! | `client/` | ca-cert.pem, client-cert.pem, client-key.pem | our client |
//! | `client-ca-only/` | ca-cert.pem | a client without certificate |
//! | `psk/` | keys.psk (`alice:<hex>`) | PSK, both sides |

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The PSK identity in `psk/keys.psk`.
pub const PSK_USER: &str = "alice";

/// A generated set of certificates and keys (see the module doc).
pub struct Pki {
    root: PathBuf,
}

struct Ca {
    cert: X509,
    key: PKey<Private>,
}

static SERIAL: AtomicU32 = AtomicU32::new(1);

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey")
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut n = X509NameBuilder::new().expect("name");
    n.append_entry_by_text("CN", cn).expect("CN");
    n.build()
}

/// Validity: `(not_before, not_after)` as Unix times.
type Validity = (i64, i64);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn current() -> Validity {
    (now() - 3600, now() + 30 * 86400)
}

fn builder(
    subject: &str,
    issuer: Option<&Ca>,
    pkey: &PKey<Private>,
    valid: Validity,
) -> X509Builder {
    let mut b = X509Builder::new().expect("x509");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(SERIAL.fetch_add(1, Ordering::Relaxed)).expect("serial");
    b.set_serial_number(&Asn1Integer::from_bn(&serial).expect("serial"))
        .expect("serial");
    b.set_subject_name(&name(subject)).expect("subject");
    match issuer {
        Some(ca) => b.set_issuer_name(ca.cert.subject_name()).expect("issuer"),
        None => b.set_issuer_name(&name(subject)).expect("issuer"),
    }
    b.set_pubkey(pkey).expect("pubkey");
    b.set_not_before(&Asn1Time::from_unix(valid.0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::from_unix(valid.1).expect("time"))
        .expect("not after");
    b
}

fn make_ca(cn: &str) -> Ca {
    let key = key();
    let mut b = builder(cn, None, &key, current());
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(&key, MessageDigest::sha256()).expect("sign CA");
    Ca {
        cert: b.build(),
        key,
    }
}

/// A leaf certificate: a server one (with `dns` names) or a client one.
fn make_leaf(ca: &Ca, cn: &str, dns: &[&str], valid: Validity) -> (X509, PKey<Private>) {
    let key = key();
    let mut b = builder(cn, Some(ca), &key, valid);
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .key_agreement()
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut eku = ExtendedKeyUsage::new();
    if dns.is_empty() {
        eku.client_auth();
    } else {
        eku.server_auth();
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        b.append_extension(san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap())
            .unwrap();
    }
    b.append_extension(eku.build().unwrap()).unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).expect("sign leaf");
    (b.build(), key)
}

fn write(dir: &Path, file: &str, pem: Vec<u8>) {
    fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join(file);
    fs::write(&path, pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Private keys must not be world-readable (GnuTLS does not care, but
    // keep the habit).
    if file.ends_with("key.pem") || file.ends_with(".psk") {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

fn server_dir(dir: &Path, ca: &Ca, dns: &[&str], valid: Validity) {
    let (cert, key) = make_leaf(ca, dns[0], dns, valid);
    write(dir, "ca-cert.pem", ca.cert.to_pem().unwrap());
    write(dir, "server-cert.pem", cert.to_pem().unwrap());
    write(
        dir,
        "server-key.pem",
        key.private_key_to_pem_pkcs8().unwrap(),
    );
}

impl Pki {
    /// Generates everything under `root`.
    pub fn generate(root: &Path) -> Pki {
        let ca = make_ca("nbd-rs test CA");
        let other_ca = make_ca("an unrelated CA");
        server_dir(&root.join("server"), &ca, &["localhost"], current());
        server_dir(
            &root.join("server-other-name"),
            &ca,
            &["other.invalid"],
            current(),
        );
        // 2020-01-01 to 2020-12-31.
        server_dir(
            &root.join("server-expired"),
            &ca,
            &["localhost"],
            (1_577_836_800, 1_609_372_800),
        );
        server_dir(
            &root.join("server-other-ca"),
            &other_ca,
            &["localhost"],
            current(),
        );
        let (cert, key) = make_leaf(&ca, "nbd-rs test client", &[], current());
        let client = root.join("client");
        write(&client, "ca-cert.pem", ca.cert.to_pem().unwrap());
        write(&client, "client-cert.pem", cert.to_pem().unwrap());
        write(
            &client,
            "client-key.pem",
            key.private_key_to_pem_pkcs8().unwrap(),
        );
        write(
            &root.join("client-ca-only"),
            "ca-cert.pem",
            ca.cert.to_pem().unwrap(),
        );
        let mut psk = [0u8; 32];
        openssl::rand::rand_bytes(&mut psk).expect("random key");
        write(
            &root.join("psk"),
            "keys.psk",
            format!("{PSK_USER}:{}\n", hex(&psk)).into_bytes(),
        );
        Pki {
            root: root.to_path_buf(),
        }
    }

    /// A directory of the layout in the module doc.
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        assert!(d.is_dir(), "{} was not generated", d.display());
        d
    }

    /// `psk/keys.psk`.
    pub fn psk_file(&self) -> PathBuf {
        self.dir("psk").join("keys.psk")
    }

    /// A PSK file with the same user and another key.
    pub fn wrong_psk_file(&self) -> PathBuf {
        let path = self.root.join("wrong.psk");
        write(
            &self.root,
            "wrong.psk",
            format!("{PSK_USER}:{}\n", hex(&[0x5a; 32])).into_bytes(),
        );
        path
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
