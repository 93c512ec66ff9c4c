//! The built libnbd.so.0 exports exactly libnbd 1.14's functions, each with
//! libnbd's symbol version, and nothing else (no Rust runtime symbols).

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

#[test]
fn exports_exactly_the_libnbd_abi() {
    let so = common::libnbd_so();
    let have: BTreeSet<(String, String)> = exported(&so).into_iter().collect();
    let want: BTreeSet<(String, String)> = common::abi_symbols().into_iter().collect();
    assert_eq!(want.len(), 126, "the symbol list should have 126 entries");

    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ABI mismatch in {}\nmissing: {missing:?}\nunexpected: {extra:?}",
        so.display()
    );
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
    for line in script.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(n) = line.strip_suffix(" {") {
            node = n.to_string();
        } else if let Some(name) = line.strip_suffix(';') {
            if name.starts_with("nbd_") {
                in_script.insert((name.to_string(), node.clone()));
            }
        }
    }
    let want: BTreeSet<_> = common::abi_symbols().into_iter().collect();
    assert_eq!(in_script, want);
}
