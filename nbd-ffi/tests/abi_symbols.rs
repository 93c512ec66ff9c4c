//! The built libnbd.so.0 exports exactly libnbd 1.24's 165 functions, each
//! with libnbd's symbol version, plus nbd-rs's extensions (`nbdrs_*`, see
//! libnbd-ext.h) in their own version node, and nothing else (no Rust
//! runtime symbols); libnbd 1.14's 126 functions among them at the same
//! version nodes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

/// Defined dynamic symbols of `so` as `(name, version)`, from `objdump -T`.
fn exported(so: &std::path::Path) -> Vec<(String, String)> {
    let out = common::run(Command::new("objdump").arg("-T").arg(so));
    let text = String::from_utf8(out.stdout).expect("objdump output is text");
    let mut symbols = Vec::new();
    for line in text.lines() {
        // Lines look like: ADDR FLAGS SECTION SIZE [VERSION] NAME
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || !fields[0].chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        if line.contains("*UND*") {
            continue; // imports, not exports
        }
        let name = fields[fields.len() - 1].to_string();
        let version = fields[fields.len() - 2].trim_matches(|c| c == '(' || c == ')');
        // The version nodes themselves appear as absolute symbols.
        if line.contains("*ABS*") && name == version {
            continue;
        }
        symbols.push((name, version.to_string()));
    }
    symbols
}

/// The extension functions at their node: the only exports beyond libnbd's.
fn extensions() -> BTreeSet<(String, String)> {
    nbd_ffi::ext::EXTENSION_SYMBOLS
        .iter()
        .map(|n| (n.to_string(), nbd_ffi::ext::EXTENSION_NODE.to_string()))
        .collect()
}

#[test]
fn exports_exactly_the_libnbd_abi() {
    let so = common::libnbd_so();
    let all: BTreeSet<(String, String)> = exported(&so).into_iter().collect();
    let ext = extensions();
    assert!(
        ext.iter().all(|e| e.0.starts_with("nbdrs_")),
        "extensions must not look like libnbd's"
    );
    let missing_ext: Vec<_> = ext.difference(&all).collect();
    assert!(
        missing_ext.is_empty(),
        "extensions not exported at {}: {missing_ext:?}",
        nbd_ffi::ext::EXTENSION_NODE
    );
    let have: BTreeSet<(String, String)> = all.difference(&ext).cloned().collect();
    let want: BTreeSet<(String, String)> = common::abi_symbols().into_iter().collect();
    assert_eq!(
        want.len(),
        165,
        "the libnbd 1.24 symbol list should have 165 entries"
    );

    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ABI mismatch in {}\nmissing: {missing:?}\nunexpected: {extra:?}",
        so.display()
    );
}

#[test]
fn exports_the_libnbd_1_14_abi() {
    // Programs built against libnbd 1.14 (Debian's nbdinfo, nbdcopy, fio)
    // keep resolving every reference, at the same version nodes.
    let so = common::libnbd_so();
    let have: BTreeSet<(String, String)> = exported(&so).into_iter().collect();
    let old: BTreeSet<(String, String)> = common::abi_symbols_1_14().into_iter().collect();
    assert_eq!(old.len(), 126);
    let missing: Vec<_> = old.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "1.14 functions not exported: {missing:?}"
    );
}

#[test]
fn abi_1_24_extends_1_14_at_the_same_nodes() {
    let new: BTreeSet<(String, String)> = common::abi_symbols().into_iter().collect();
    let old: BTreeSet<(String, String)> = common::abi_symbols_1_14().into_iter().collect();
    let moved: Vec<_> = old.difference(&new).collect();
    assert!(
        moved.is_empty(),
        "1.14 entries not in 1.24's list as they are: {moved:?}"
    );
    // What 1.24 adds sits in the nodes after 1.14's, 1.16 to 1.24.
    let added: BTreeSet<&str> = new.difference(&old).map(|(_, v)| v.as_str()).collect();
    let nodes: BTreeSet<&str> = [
        "LIBNBD_1.16",
        "LIBNBD_1.18",
        "LIBNBD_1.20",
        "LIBNBD_1.22",
        "LIBNBD_1.24",
    ]
    .into_iter()
    .collect();
    assert!(added.is_subset(&nodes), "new functions in nodes {added:?}");
    assert_eq!(new.len() - old.len(), 39);
}

#[test]
fn committed_symbol_lists_match_shared() {
    // nbd-ffi/abi/ keeps copies for builds without ../shared beside the
    // repository; where shared/ is present they must not have drifted.
    for version in ["1.14", "1.24"] {
        let file = format!("libnbd-{version}.symbols");
        let shared = common::repo_root().join("../shared/abi").join(&file);
        if !shared.exists() {
            eprintln!(
                "SKIPPED committed_symbol_lists_match_shared: no {}",
                shared.display()
            );
            continue;
        }
        let committed = common::crate_dir().join("abi").join(&file);
        assert_eq!(
            std::fs::read_to_string(&shared).unwrap(),
            std::fs::read_to_string(&committed).unwrap(),
            "{} differs from {}",
            committed.display(),
            shared.display()
        );
    }
}

#[test]
fn soname_is_libnbd_so_0() {
    let so = common::libnbd_so();
    let out = common::run(Command::new("readelf").arg("-d").arg(&so));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Library soname: [libnbd.so.0]"),
        "no SONAME libnbd.so.0 in:\n{text}"
    );
    let link = so.with_file_name("libnbd.so");
    assert_eq!(
        std::fs::read_link(&link).expect("libnbd.so symlink"),
        std::path::PathBuf::from("libnbd.so.0")
    );
}

#[test]
fn version_script_matches_symbol_list() {
    // libnbd.syms was generated from the list; keep the two in step.
    let script = std::fs::read_to_string(common::crate_dir().join("libnbd.syms")).unwrap();
    let mut node = String::new();
    let mut in_script = BTreeSet::new();
    let mut ext_in_script = BTreeSet::new();
    for line in script.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(n) = line.strip_suffix(" {") {
            node = n.to_string();
        } else if let Some(name) = line.strip_suffix(';') {
            if name.starts_with("nbd_") {
                in_script.insert((name.to_string(), node.clone()));
            } else if !name.starts_with("local:") && !name.starts_with('}') {
                ext_in_script.insert((name.to_string(), node.clone()));
            }
        }
    }
    let want: BTreeSet<_> = common::abi_symbols().into_iter().collect();
    assert_eq!(in_script, want);
    assert_eq!(ext_in_script, extensions());
}
