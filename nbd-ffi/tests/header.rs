//! include/libnbd.h is a drop-in for Debian's libnbd 1.14 header:
//!
//! * the same `LIBNBD_*` macros, with the same values and C types;
//! * callback structs with the same size, alignment and member offsets;
//! * the same function prototypes (return and parameter types);
//! * it compiles cleanly as C99, C11 and C++11.
//!
//! Debian's header (/usr/include/libnbd.h, from libnbd-dev) is only read and
//! compiled against here, never linked: the programs built from it print
//! sizes and constants and do not call libnbd.

mod common;

use common::{cc, cxx, have_system_header, repo_root, run, scratch, SYSTEM_HEADER};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn our_header() -> std::path::PathBuf {
    repo_root().join("include/libnbd.h")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Object-like `#define LIBNBD_* value` macros of a header, by name.
/// Function-like macros and compiler-detection helpers are not API.
fn libnbd_macros(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define ") else {
            continue;
        };
        let rest = rest.trim_start();
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, value) = rest.split_at(name_end);
        if !name.starts_with("LIBNBD_") || value.starts_with('(') {
            continue; // not ours, or function-like
        }
        if name == "LIBNBD_H"
            || name == "LIBNBD_GCC_VERSION"
            || name.starts_with("LIBNBD_ATTRIBUTE_")
        {
            continue; // include guard and compiler helpers
        }
        out.insert(name.to_string(), value.trim().to_string());
    }
    out
}

#[test]
fn same_macro_names_as_debian() {
    if !have_system_header("same_macro_names_as_debian") {
        return;
    }
    let theirs: BTreeSet<String> = libnbd_macros(&read(Path::new(SYSTEM_HEADER)))
        .into_keys()
        .collect();
    let ours: BTreeSet<String> = libnbd_macros(&read(&our_header())).into_keys().collect();
    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nextra: {extra:?}"
    );
    // Also the macro every C user of optional callbacks needs.
    assert!(read(&our_header()).contains("#define NBD_NULL_COMPLETION"));
}

/// A C program printing, for whichever libnbd.h it is compiled with, the
/// layout of each callback struct and the value and type of every macro.
fn probe_source(macros: &BTreeMap<String, String>) -> String {
    let mut src = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <libnbd.h>\n\n\
         #define LAYOUT(T, M1, M2, M3) \\\n\
         printf(\"%s size=%zu align=%zu %s=%zu %s=%zu %s=%zu\\n\", #T, sizeof(T), \\\n\
         (size_t)_Alignof(T), #M1, offsetof(T, M1), #M2, offsetof(T, M2), #M3, offsetof(T, M3))\n\n\
         #define NUM(X) \\\n\
         printf(\"%s=%llu size=%zu signed=%d\\n\", #X, (unsigned long long)(X), sizeof(X), \\\n\
         (int)((X) * 0 - 1 < 0))\n\n",
    );
    // Numeric macros must stay usable in #if (a cast would break that).
    for (name, value) in macros {
        if !value.starts_with('"') {
            src.push_str(&format!(
                "#if ({name}) + 0 < 0\n#error {name} is negative\n#endif\n"
            ));
        }
    }
    src.push_str("\nint main(void)\n{\n");
    for t in [
        "nbd_chunk_callback",
        "nbd_completion_callback",
        "nbd_debug_callback",
        "nbd_extent_callback",
        "nbd_list_callback",
        "nbd_context_callback",
    ] {
        src.push_str(&format!("  LAYOUT({t}, callback, user_data, free);\n"));
    }
    src.push_str(
        "  {\n    nbd_completion_callback c = NBD_NULL_COMPLETION;\n    \
         printf(\"NBD_NULL_COMPLETION callback=%d user_data=%d free=%d\\n\", \
         c.callback == NULL, c.user_data == NULL, c.free == NULL);\n  }\n",
    );
    for (name, value) in macros {
        if value.starts_with('"') {
            src.push_str(&format!(
                "  printf(\"%s=\\\"%s\\\" size=%zu\\n\", \"{name}\", {name}, sizeof({name}));\n"
            ));
        } else {
            src.push_str(&format!("  NUM({name});\n"));
        }
    }
    src.push_str("  return 0;\n}\n");
    src
}

#[test]
fn layouts_and_constants_match_debian() {
    if !have_system_header("layouts_and_constants_match_debian") {
        return;
    }
    let macros = libnbd_macros(&read(Path::new(SYSTEM_HEADER)));
    let dir = scratch("layouts");
    let src = dir.join("probe.c");
    std::fs::write(&src, probe_source(&macros)).unwrap();

    let ours = dir.join("probe-ours");
    let theirs = dir.join("probe-debian");
    let include = repo_root().join("include");
    run(cc()
        .args(["-std=c11", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&ours));
    // Debian's header from the default include path (/usr/include) only.
    run(cc()
        .args(["-std=c11", "-I/usr/include"])
        .arg(&src)
        .arg("-o")
        .arg(&theirs));

    let ours_out = String::from_utf8(run(&mut Command::new(&ours)).stdout).unwrap();
    let theirs_out = String::from_utf8(run(&mut Command::new(&theirs)).stdout).unwrap();
    // Every macro and all six structs were printed.
    assert_eq!(theirs_out.lines().count(), macros.len() + 7, "{theirs_out}");
    let diff: Vec<String> = theirs_out
        .lines()
        .zip(ours_out.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("debian: {a}\n  ours: {b}"))
        .collect();
    assert!(
        diff.is_empty() && ours_out.lines().count() == theirs_out.lines().count(),
        "differences:\n{}",
        diff.join("\n")
    );
}

/// A declaration as a list of tokens.
fn type_tokens(text: &str) -> Vec<String> {
    let spaced = text.replace('*', " * ");
    spaced.split_whitespace().map(str::to_string).collect()
}

/// Spells a bare `unsigned` as `unsigned int`.
fn normalize(mut tokens: Vec<String>) -> Vec<String> {
    if tokens.last().map(String::as_str) == Some("unsigned") {
        tokens.push("int".into());
    }
    tokens
}

/// Drops the parameter name from a parameter declaration.
fn param_type(param: &str) -> Vec<String> {
    let mut tokens = type_tokens(param);
    let is_ident = |t: &str| t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if tokens.len() > 1 && tokens.last().is_some_and(|t| is_ident(t)) {
        // `unsigned int` has no name to drop; a name follows a type.
        let last = tokens.last().unwrap().as_str();
        let keywords = ["int", "char", "long", "short", "bool", "void"];
        if !keywords.contains(&last) || tokens[tokens.len() - 2] == "*" {
            tokens.pop();
        }
    }
    normalize(tokens)
}

type Prototype = (Vec<String>, Vec<Vec<String>>);

/// `nbd_*` function prototypes of a header: name -> (return type, params).
fn prototypes(text: &str) -> BTreeMap<String, Prototype> {
    // Drop comments, preprocessor lines and libnbd's attribute macros.
    let mut clean = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        clean.push_str(&rest[..start]);
        rest = rest[start..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    clean.push_str(rest);
    let clean: String = clean
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeMap::new();
    for stmt in clean.split(';') {
        let stmt = match stmt.find("LIBNBD_ATTRIBUTE_") {
            Some(i) => &stmt[..i],
            None => stmt,
        };
        let stmt = stmt.trim();
        let stmt = stmt.strip_prefix("extern ").unwrap_or(stmt);
        let Some(open) = stmt.find('(') else { continue };
        let head = stmt[..open].trim();
        let Some(close) = stmt.rfind(')') else {
            continue;
        };
        let head_tokens = type_tokens(head);
        let Some(name) = head_tokens.last() else {
            continue;
        };
        if !name.starts_with("nbd_") || head.contains('{') || head.contains('}') {
            continue;
        }
        let ret = normalize(head_tokens[..head_tokens.len() - 1].to_vec());
        let params = stmt[open + 1..close].split(',').map(param_type).collect();
        out.insert(name.clone(), (ret, params));
    }
    out
}

#[test]
fn prototypes_match_debian() {
    if !have_system_header("prototypes_match_debian") {
        return;
    }
    let theirs = prototypes(&read(Path::new(SYSTEM_HEADER)));
    let ours = prototypes(&read(&our_header()));
    assert_eq!(
        theirs.len(),
        126,
        "parsed {} prototypes from Debian's header",
        theirs.len()
    );
    let mut problems = Vec::new();
    for (name, proto) in &theirs {
        match ours.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some(o) if o != proto => {
                problems.push(format!("{name}:\n  debian: {proto:?}\n  ours:   {o:?}"))
            }
            Some(_) => {}
        }
    }
    for name in ours.keys().filter(|n| !theirs.contains_key(*n)) {
        problems.push(format!("{name}: not in Debian's header"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn debian_prototypes_redeclare_ours_cleanly() {
    // The compiler's view of "identical types": redeclaring every function
    // with Debian's prototype after including our header must not conflict.
    if !have_system_header("debian_prototypes_redeclare_ours_cleanly") {
        return;
    }
    let text = read(Path::new(SYSTEM_HEADER));
    let mut src = String::from("#include <libnbd.h>\n");
    for stmt in text.split(';') {
        let Some(start) = stmt.find("extern ") else {
            continue;
        };
        let decl = &stmt[start..];
        if decl.starts_with("extern \"C\"") || !decl.contains("nbd_") {
            continue;
        }
        let decl = match decl.find("LIBNBD_ATTRIBUTE_") {
            Some(i) => &decl[..i],
            None => decl,
        };
        src.push_str(decl.trim());
        src.push_str(";\n");
    }
    let dir = scratch("redeclare");
    let file = dir.join("redeclare.c");
    std::fs::write(&file, src).unwrap();
    run(cc()
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "-I"])
        .arg(repo_root().join("include"))
        .arg(&file)
        .arg("-o")
        .arg(dir.join("redeclare.o")));
}

#[test]
fn header_compiles_as_c99_c11_and_cxx11() {
    let dir = scratch("compile");
    let body = "#include <libnbd.h>\n#include <libnbd.h> /* the guard works */\n\
                int main(void)\n{\n  nbd_completion_callback c = NBD_NULL_COMPLETION;\n  \
                (void)c;\n  return LIBNBD_HAVE_NBD_CREATE - 1;\n}\n";
    let c_file = dir.join("t.c");
    let cxx_file = dir.join("t.cc");
    std::fs::write(&c_file, body).unwrap();
    std::fs::write(&cxx_file, body).unwrap();
    let include = repo_root().join("include");
    for std in ["-std=c99", "-std=c11"] {
        run(cc()
            .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(&include)
            .arg("-c")
            .arg(&c_file)
            .arg("-o")
            .arg(dir.join("t.o")));
    }
    run(cxx()
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-I",
        ])
        .arg(&include)
        .arg("-c")
        .arg(&cxx_file)
        .arg("-o")
        .arg(dir.join("t.o")));
    // The prototypes are inside extern "C" for C++ callers.
    let text = read(&our_header());
    assert!(text.contains("extern \"C\" {"), "no extern \"C\" block");
}

#[test]
fn have_macros_cover_every_exported_function() {
    let text = read(&our_header());
    let macros = libnbd_macros(&text);
    for (name, _) in common::abi_symbols() {
        let have = format!("LIBNBD_HAVE_{}", name.to_uppercase());
        assert_eq!(macros.get(&have).map(String::as_str), Some("1"), "{have}");
    }
    // One per function plus one per callback type, nothing else.
    let have = macros
        .keys()
        .filter(|m| m.starts_with("LIBNBD_HAVE_"))
        .count();
    assert_eq!(have, 126 + 6);
}

#[test]
fn string_constants_match_rust() {
    let macros = libnbd_macros(&read(&our_header()));
    let quoted = |s: &std::ffi::CStr| format!("\"{}\"", s.to_str().unwrap());
    assert_eq!(
        macros["LIBNBD_NAMESPACE_BASE"],
        quoted(nbd_ffi::constants::NAMESPACE_BASE)
    );
    assert_eq!(
        macros["LIBNBD_CONTEXT_BASE_ALLOCATION"],
        quoted(nbd_ffi::constants::CONTEXT_BASE_ALLOCATION)
    );
}
