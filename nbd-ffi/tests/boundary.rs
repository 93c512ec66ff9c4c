//! Every exported `nbd_*` function runs its whole body inside the panic
//! boundary: the first thing in the body is `ffi_boundary!("<its name>", ...)`.
//! Also checks that the exports in the sources are exactly the ABI list.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Strips `//` comments (the sources put no `//` inside string literals on
/// the lines that matter here).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_export_uses_the_panic_boundary() {
    let mut files = Vec::new();
    rust_files(&common::crate_dir().join("src"), &mut files);
    files.sort();

    let mut exports = BTreeSet::new();
    let mut problems = Vec::new();
    for file in &files {
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let mut rest = text.as_str();
        while let Some(pos) = rest.find("extern \"C\" fn ") {
            let before = &rest[..pos];
            let after = &rest[pos + "extern \"C\" fn ".len()..];
            rest = after;
            let name_end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..name_end];
            if !name.starts_with("nbd_") {
                continue;
            }
            let place = format!("{}: {name}", file.display());
            // The attribute block just above the signature exports it.
            let attrs = before.rsplit("\n\n").next().unwrap_or("");
            if !attrs.contains("#[no_mangle]") || !attrs.contains("pub unsafe") {
                problems.push(format!(
                    "{place}: not `#[no_mangle] pub unsafe extern \"C\"`"
                ));
            }
            let Some(open) = after.find('{') else {
                problems.push(format!("{place}: no body"));
                continue;
            };
            let body = after[open + 1..].trim_start();
            let expected = format!("ffi_boundary!(\"{name}\",");
            if !body.starts_with(&expected) {
                problems.push(format!("{place}: body does not start with {expected}"));
            }
            if !exports.insert(name.to_string()) {
                problems.push(format!("{place}: defined twice"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let want: BTreeSet<String> = common::abi_symbols().into_iter().map(|(n, _)| n).collect();
    let missing: Vec<_> = want.difference(&exports).collect();
    let extra: Vec<_> = exports.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "exports in the sources differ from the ABI list\nmissing: {missing:?}\nextra: {extra:?}"
    );
}
