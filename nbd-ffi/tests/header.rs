//! include/libnbd.h is a drop-in for libnbd 1.24's header (the reference,
//! `ROOT/sysroot/usr/include/libnbd.h` of the extracted libnbd 1.24, see
//! `common::latest_root`) and still for Debian's libnbd 1.14 one:
//!
//! * the same `LIBNBD_*` macros as 1.24's, with the same values and C types
//!   (1.14's among them, unchanged);
//! * callback structs (seven in 1.24, with `nbd_extent64_callback`) and
//!   `nbd_extent` with the same size, alignment and member offsets;
//! * the same function prototypes (return and parameter types) as 1.24's
//!   165, so 1.14's 126 too;
//! * it compiles cleanly as C99, C11 and C++11.
//!
//! The reference headers are only read and compiled against here, never
//! linked: the programs built from them print sizes and constants and do not
//! call libnbd.  `NBD_TEST_INCLUDE` points the tests at another header
//! directory than `include/` (with libnbd 1.24's own, every comparison must
//! hold: that is how the tests themselves are checked).

mod common;

use common::{cc, cxx, have_system_header, latest_include, repo_root, run, scratch, SYSTEM_HEADER};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of the header under test: `NBD_TEST_INCLUDE`, else
/// `include/` of the repository.
fn our_include() -> PathBuf {
    match std::env::var_os("NBD_TEST_INCLUDE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo_root().join("include"),
    }
}

fn our_header() -> PathBuf {
    our_include().join("libnbd.h")
}

/// libnbd 1.24's header.
fn latest_header() -> PathBuf {
    latest_include().join("libnbd.h")
}

/// libnbd 1.14's callback types, and 1.24's (which adds the 64-bit extent
/// callback).
const CALLBACKS_1_14: [&str; 6] = [
    "nbd_chunk_callback",
    "nbd_completion_callback",
    "nbd_debug_callback",
    "nbd_extent_callback",
    "nbd_list_callback",
    "nbd_context_callback",
];
const CALLBACKS_1_24: [&str; 7] = [
    "nbd_chunk_callback",
    "nbd_completion_callback",
    "nbd_debug_callback",
    "nbd_extent_callback",
    "nbd_extent64_callback",
    "nbd_list_callback",
    "nbd_context_callback",
];

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
fn same_macro_names_as_libnbd_1_24() {
    let theirs: BTreeSet<String> = libnbd_macros(&read(&latest_header())).into_keys().collect();
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

#[test]
fn macros_of_debian_1_14_are_kept() {
    if !have_system_header("macros_of_debian_1_14_are_kept") {
        return;
    }
    let old = libnbd_macros(&read(Path::new(SYSTEM_HEADER)));
    let new = libnbd_macros(&read(&latest_header()));
    let ours = libnbd_macros(&read(&our_header()));
    // 1.24 kept every 1.14 macro; so must we (values: see the layout tests).
    for name in old.keys() {
        assert!(new.contains_key(name), "libnbd 1.24 dropped {name}?");
        assert!(ours.contains_key(name), "{name} (libnbd 1.14) is missing");
    }
}

/// A C program printing, for whichever libnbd.h it is compiled with, the
/// layout of each callback struct and the value and type of every macro.
fn probe_source(macros: &BTreeMap<String, String>, callbacks: &[&str], extent: bool) -> String {
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
    for t in callbacks {
        src.push_str(&format!("  LAYOUT({t}, callback, user_data, free);\n"));
    }
    if extent {
        src.push_str(
            "  printf(\"nbd_extent size=%zu align=%zu length=%zu flags=%zu\\n\", \
             sizeof(nbd_extent), (size_t)_Alignof(nbd_extent), \
             offsetof(nbd_extent, length), offsetof(nbd_extent, flags));\n",
        );
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

/// Compiles the probe for `macros`, `callbacks` (and `nbd_extent`) once
/// with our header and once with the reference in `reference_include`;
/// both programs must print the same lines.
fn compare_layouts(
    name: &str,
    macros: &BTreeMap<String, String>,
    callbacks: &[&str],
    extent: bool,
    reference_include: &Path,
) {
    let dir = scratch(name);
    let src = dir.join("probe.c");
    std::fs::write(&src, probe_source(macros, callbacks, extent)).unwrap();

    let ours = dir.join("probe-ours");
    let theirs = dir.join("probe-reference");
    run(cc()
        .args(["-std=c11", "-I"])
        .arg(our_include())
        .arg(&src)
        .arg("-o")
        .arg(&ours));
    run(cc()
        .args(["-std=c11", "-I"])
        .arg(reference_include)
        .arg(&src)
        .arg("-o")
        .arg(&theirs));

    let ours_out = String::from_utf8(run(&mut Command::new(&ours)).stdout).unwrap();
    let theirs_out = String::from_utf8(run(&mut Command::new(&theirs)).stdout).unwrap();
    // Every macro, every struct and NBD_NULL_COMPLETION were printed.
    let want_lines = macros.len() + callbacks.len() + 1 + usize::from(extent);
    assert_eq!(theirs_out.lines().count(), want_lines, "{theirs_out}");
    let diff: Vec<String> = theirs_out
        .lines()
        .zip(ours_out.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("reference: {a}\n     ours: {b}"))
        .collect();
    assert!(
        diff.is_empty() && ours_out.lines().count() == theirs_out.lines().count(),
        "differences:\n{}",
        diff.join("\n")
    );
}

#[test]
fn layouts_and_constants_match_libnbd_1_24() {
    let macros = libnbd_macros(&read(&latest_header()));
    compare_layouts(
        "layouts-1.24",
        &macros,
        &CALLBACKS_1_24,
        true,
        &latest_include(),
    );
}

#[test]
fn layouts_and_constants_match_debian_1_14() {
    // 1.14's macros and structs only, compiled with Debian's header from
    // the default include path (/usr/include).
    if !have_system_header("layouts_and_constants_match_debian_1_14") {
        return;
    }
    let mut macros = libnbd_macros(&read(Path::new(SYSTEM_HEADER)));
    // 1.24 widened three masks for its new flags (CMD_FLAG_PAYLOAD_LEN,
    // STRICT_PAYLOAD and STRICT_AUTO_FLAG, ALLOW_TRANSPORT_SSH); ours follow
    // 1.24 there (checked by the test above), every other 1.14 value stands.
    let latest = libnbd_macros(&read(&latest_header()));
    let changed: BTreeSet<String> = macros
        .iter()
        .filter(|(name, value)| latest.get(*name) != Some(*value))
        .map(|(name, _)| name.clone())
        .collect();
    let widened: BTreeSet<String> = [
        "LIBNBD_ALLOW_TRANSPORT_MASK",
        "LIBNBD_CMD_FLAG_MASK",
        "LIBNBD_STRICT_MASK",
    ]
    .map(String::from)
    .into();
    assert_eq!(changed, widened, "macros whose values 1.24 changed");
    macros.retain(|name, _| !widened.contains(name));
    compare_layouts(
        "layouts-1.14",
        &macros,
        &CALLBACKS_1_14,
        false,
        Path::new("/usr/include"),
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

/// Differences between the prototypes of `reference` and ours; with
/// `exact`, functions we declare beyond the reference's count too.
fn prototype_problems(reference: &Path, count: usize, exact: bool) -> Vec<String> {
    let theirs = prototypes(&read(reference));
    let ours = prototypes(&read(&our_header()));
    assert_eq!(
        theirs.len(),
        count,
        "parsed {} prototypes from {}",
        theirs.len(),
        reference.display()
    );
    let mut problems = Vec::new();
    for (name, proto) in &theirs {
        match ours.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some(o) if o != proto => problems.push(format!(
                "{name}:\n  reference: {proto:?}\n  ours:      {o:?}"
            )),
            Some(_) => {}
        }
    }
    if exact {
        for name in ours.keys().filter(|n| !theirs.contains_key(*n)) {
            problems.push(format!("{name}: not in {}", reference.display()));
        }
    }
    problems
}

#[test]
fn prototypes_match_libnbd_1_24() {
    let problems = prototype_problems(&latest_header(), 165, true);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn prototypes_of_debian_1_14_are_kept() {
    if !have_system_header("prototypes_of_debian_1_14_are_kept") {
        return;
    }
    let problems = prototype_problems(Path::new(SYSTEM_HEADER), 126, false);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The compiler's view of "identical types": redeclaring every function
/// with the reference's prototype after including our header must not
/// conflict.
fn redeclare(name: &str, reference: &Path) {
    let text = read(reference);
    let mut src = String::from("#include <libnbd.h>\n");
    let mut n = 0;
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
        n += 1;
    }
    assert!(
        n >= 126,
        "only {n} declarations taken from {}",
        reference.display()
    );
    let dir = scratch(name);
    let file = dir.join("redeclare.c");
    std::fs::write(&file, src).unwrap();
    run(cc()
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "-I"])
        .arg(our_include())
        .arg(&file)
        .arg("-o")
        .arg(dir.join("redeclare.o")));
}

#[test]
fn libnbd_1_24_prototypes_redeclare_ours_cleanly() {
    redeclare("redeclare-1.24", &latest_header());
}

#[test]
fn debian_1_14_prototypes_redeclare_ours_cleanly() {
    if !have_system_header("debian_1_14_prototypes_redeclare_ours_cleanly") {
        return;
    }
    redeclare("redeclare-1.14", Path::new(SYSTEM_HEADER));
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
    let include = our_include();
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
    for cb in CALLBACKS_1_24 {
        let have = format!("LIBNBD_HAVE_{}", cb.to_uppercase());
        assert_eq!(macros.get(&have).map(String::as_str), Some("1"), "{have}");
    }
    // One per function plus one per callback type, nothing else.
    let have = macros
        .keys()
        .filter(|m| m.starts_with("LIBNBD_HAVE_"))
        .count();
    assert_eq!(have, 165 + 7);
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
    assert_eq!(
        macros["LIBNBD_NAMESPACE_QEMU"],
        quoted(nbd_ffi::constants::NAMESPACE_QEMU)
    );
    assert_eq!(
        macros["LIBNBD_CONTEXT_QEMU_DIRTY_BITMAP"],
        quoted(nbd_ffi::constants::CONTEXT_QEMU_DIRTY_BITMAP)
    );
    assert_eq!(
        macros["LIBNBD_CONTEXT_QEMU_ALLOCATION_DEPTH"],
        quoted(nbd_ffi::constants::CONTEXT_QEMU_ALLOCATION_DEPTH)
    );
}

#[test]
fn reference_header_is_libnbd_1_24() {
    // The reference itself has a LIBNBD_HAVE_* for each of the 165
    // functions of the 1.24 list and the 7 callback types, so that a wrong
    // root cannot pass for 1.24.
    let text = read(&latest_header());
    let macros = libnbd_macros(&text);
    let have = macros
        .keys()
        .filter(|m| m.starts_with("LIBNBD_HAVE_"))
        .count();
    assert_eq!(have, 165 + 7, "{}", latest_header().display());
    for (name, _) in common::abi_symbols() {
        let have = format!("LIBNBD_HAVE_{}", name.to_uppercase());
        assert!(
            macros.contains_key(&have),
            "{have} not in libnbd 1.24's header"
        );
    }
}
