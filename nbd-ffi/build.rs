//! Generates the C API of libnbd.so.0 from one table.
//!
//! The table is `api/*.api` (one file per family of calls; the grammar is in
//! `api/README.md`). From it this script writes:
//!
//! - `src/exports/<family>.rs`: every `extern "C"` export with its
//!   boilerplate (panic boundary, handle lookup, lock, debug trace, state
//!   check, NULL and flag checks, callback ownership), calling the family
//!   module's implementation or, for plain settings, reading or writing the
//!   handle's field directly;
//! - `src/exports/mod.rs` and `src/exports/have.rs` (the
//!   `LIBNBD_HAVE_NBD_*` macros, one per function and callback type);
//! - `libnbd.syms`, the linker version script with libnbd's version nodes.
//!
//! The outputs are committed (cbindgen reads `src/exports/` to write
//! `include/libnbd.h`, and `build-so.sh` reads `libnbd.syms`); a file is
//! rewritten only when its content changes, so an unchanged table costs
//! nothing. `tests/abi_symbols.rs` checks the built library against libnbd's
//! ABI list, and CI fails if a generated file differs from what is committed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let api = dir.join("api");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=api");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let version = libnbd_version(&dir.join("Cargo.toml"));
    println!("cargo:rustc-env=NBD_LIBNBD_VERSION={version}");

    let mut families = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&api)
        .expect("nbd-ffi/api exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "api"))
        .collect();
    names.sort();
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(path).expect("readable table");
        let family = path.file_stem().unwrap().to_string_lossy().into_owned();
        match parse(&family, &text) {
            Ok(f) => families.push(f),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    if let Err(e) = check(&families) {
        panic!("api table: {e}");
    }

    let out = dir.join("src/exports");
    fs::create_dir_all(&out).expect("src/exports can be created");
    for f in &families {
        let file = out.join(format!("{}.rs", f.name));
        if f.pending {
            let _ = fs::remove_file(file);
        } else {
            write_if_changed(&file, &rustfmt(gen_family(f)));
        }
    }
    write_if_changed(&out.join("mod.rs"), &rustfmt(gen_mod(&families)));
    write_if_changed(&out.join("have.rs"), &rustfmt(gen_have(&families)));
    write_if_changed(&dir.join("libnbd.syms"), &gen_syms(&families));
}

/// `package.metadata.libnbd.version` from nbd-ffi's Cargo.toml: the libnbd
/// release whose API this library implements.
fn libnbd_version(manifest: &Path) -> String {
    let text = fs::read_to_string(manifest).expect("Cargo.toml is readable");
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[package.metadata.libnbd]";
        } else if let Some(v) = line.strip_prefix("version").filter(|_| in_section) {
            let v = v.trim().trim_start_matches('=').trim().trim_matches('"');
            assert!(
                v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
                "package.metadata.libnbd.version must be MAJOR.MINOR.RELEASE, not {v:?}"
            );
            return v.to_string();
        }
    }
    panic!("nbd-ffi/Cargo.toml lacks [package.metadata.libnbd] version");
}

/// Formats generated Rust as `cargo fmt` would, so that the committed files
/// pass `cargo fmt --check`. Without rustfmt the text is kept as it is.
fn rustfmt(text: String) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let rustfmt = std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into());
    let child = Command::new(rustfmt)
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let Ok(mut child) = child else { return text };
    if let Some(mut stdin) = child.stdin.take() {
        if stdin.write_all(text.as_bytes()).is_err() {
            return text;
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap_or(text),
        _ => text,
    }
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

// ----- The table -----

/// One family: one `api/<name>.api` file.
struct Family {
    name: String,
    /// `pending`: the family's exports are still written by hand in its
    /// module (while it is being moved onto the table); its rows still feed
    /// the version script and the `LIBNBD_HAVE_*` macros.
    pending: bool,
    doc: Vec<String>,
    callbacks: Vec<String>,
    fns: Vec<Func>,
}

/// One exported function.
struct Func {
    name: String,
    args: Vec<Arg>,
    ret: Ret,
    since: String,
    states: Option<String>,
    body: Body,
    handle: bool,
    doc: Vec<String>,
}

enum Body {
    /// `call path`: `path(inner, args...)`.
    Call(String),
    /// `get expr`: `Ok(expr)`.
    Get(String),
    /// `set place`: `place = arg; Ok(0)`.
    Set(String),
    /// `manual`: the export is written by hand in its module.
    Manual,
}

struct Arg {
    name: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Bool,
    Int,
    UInt32,
    UInt64,
    Int64,
    Size,
    UIntPtr,
    Flags(String),
    String,
    OptString,
    Strings,
    BufOut,
    BufIn,
    SockAddr,
    Closure(&'static str),
}

#[derive(Clone, Copy, PartialEq)]
enum Ret {
    Int,
    Bool,
    Int64,
    Cookie,
    UInt32,
    Unsigned,
    UInt64,
    SSize,
    UIntPtr,
    String,
    StaticString,
    Void,
}

const CLOSURES: &[&str] = &[
    "chunk",
    "completion",
    "debug",
    "extent",
    "extent64",
    "list",
    "context",
];

fn parse_kind(s: &str) -> Result<Kind, String> {
    Ok(match s {
        "bool" => Kind::Bool,
        "int" => Kind::Int,
        "uint32" => Kind::UInt32,
        "uint64" => Kind::UInt64,
        "int64" => Kind::Int64,
        "size" => Kind::Size,
        "uintptr" => Kind::UIntPtr,
        "string" => Kind::String,
        "string?" => Kind::OptString,
        "strings" => Kind::Strings,
        "bufout" => Kind::BufOut,
        "bufin" => Kind::BufIn,
        "sockaddr" => Kind::SockAddr,
        _ => {
            if let Some(mask) = s.strip_prefix("flags(").and_then(|m| m.strip_suffix(')')) {
                Kind::Flags(mask.to_string())
            } else if let Some(c) = s.strip_suffix("_callback") {
                match CLOSURES.iter().find(|k| **k == c) {
                    Some(k) => Kind::Closure(k),
                    None => return Err(format!("unknown callback type {s}")),
                }
            } else {
                return Err(format!("unknown argument kind {s}"));
            }
        }
    })
}

fn parse_ret(s: &str) -> Result<Ret, String> {
    Ok(match s {
        "int" => Ret::Int,
        "bool" => Ret::Bool,
        "int64" => Ret::Int64,
        "cookie" => Ret::Cookie,
        "uint32" => Ret::UInt32,
        "unsigned" => Ret::Unsigned,
        "uint64" => Ret::UInt64,
        "ssize" => Ret::SSize,
        "uintptr" => Ret::UIntPtr,
        "string" => Ret::String,
        "static_string" => Ret::StaticString,
        "void" => Ret::Void,
        _ => return Err(format!("unknown return kind {s}")),
    })
}

fn parse(family: &str, text: &str) -> Result<Family, String> {
    let mut f = Family {
        name: family.to_string(),
        pending: false,
        doc: Vec::new(),
        callbacks: Vec::new(),
        fns: Vec::new(),
    };
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let err = |m: String| format!("line {line_no}: {m}");
        if let Some(doc) = raw.strip_prefix("#!") {
            f.doc.push(doc.strip_prefix(' ').unwrap_or(doc).to_string());
            continue;
        }
        let line = raw.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            // A new entry.
            if line == "pending" {
                f.pending = true;
                continue;
            }
            if let Some(cb) = line.strip_prefix("callback ") {
                f.callbacks.push(cb.trim().to_string());
                continue;
            }
            let sig = line
                .strip_prefix("fn ")
                .ok_or_else(|| err(format!("expected `fn` or `callback`: {line}")))?;
            let (name, rest) = sig
                .split_once('(')
                .ok_or_else(|| err("expected `(`".into()))?;
            let (args, ret) = rest
                .rsplit_once(')')
                .ok_or_else(|| err("expected `)`".into()))?;
            let ret = ret
                .trim()
                .strip_prefix("->")
                .ok_or_else(|| err("expected `-> RET`".into()))?;
            let mut parsed = Vec::new();
            for a in split_args(args) {
                let (an, ak) = a
                    .split_once(':')
                    .ok_or_else(|| err(format!("argument `{a}` needs `name: kind`")))?;
                parsed.push(Arg {
                    name: an.trim().to_string(),
                    kind: parse_kind(ak.trim()).map_err(err)?,
                });
            }
            f.fns.push(Func {
                name: name.trim().to_string(),
                args: parsed,
                ret: parse_ret(ret.trim()).map_err(err)?,
                since: String::new(),
                states: None,
                body: Body::Manual,
                handle: true,
                doc: Vec::new(),
            });
            continue;
        }
        let func = f
            .fns
            .last_mut()
            .ok_or_else(|| err("attribute before any `fn`".into()))?;
        let line = line.trim();
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim().to_string();
        match key {
            "since" => func.since = value,
            "states" => func.states = (value != "any").then_some(value),
            "call" => func.body = Body::Call(value),
            "get" => func.body = Body::Get(value),
            "set" => func.body = Body::Set(value),
            "manual" => func.body = Body::Manual,
            "nohandle" => func.handle = false,
            "doc" => func.doc.push(value),
            _ => return Err(err(format!("unknown attribute `{key}`"))),
        }
    }
    Ok(f)
}

/// Splits an argument list at the commas outside parentheses.
fn split_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(args[start..].trim());
    out.retain(|a| !a.is_empty());
    out
}

fn check(families: &[Family]) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for f in families {
        for func in &f.fns {
            if seen.insert(func.name.clone(), ()).is_some() {
                return Err(format!("nbd_{} is listed twice", func.name));
            }
            if !func.since.starts_with("1.") {
                return Err(format!("nbd_{}: `since 1.N` is missing", func.name));
            }
            if func.doc.is_empty() {
                return Err(format!("nbd_{}: `doc` is missing", func.name));
            }
            if let Body::Set(assign) = &func.body {
                if (func.args.len() != 1 && !assign.contains(" = ")) || func.ret != Ret::Int {
                    return Err(format!(
                        "nbd_{}: `set` needs one argument and returns int",
                        func.name
                    ));
                }
            }
        }
    }
    Ok(())
}

// ----- Generated Rust -----

const HEADER: &str =
    "// @generated by nbd-ffi/build.rs from nbd-ffi/api/: edit the table, not this file.\n";

fn c_params(arg: &Arg) -> Vec<(String, &'static str)> {
    let n = arg.name.clone();
    let one = |t| vec![(n.clone(), t)];
    match &arg.kind {
        Kind::Bool => one("bool"),
        Kind::Int => one("c_int"),
        Kind::UInt32 | Kind::Flags(_) => one("u32"),
        Kind::UInt64 => one("u64"),
        Kind::Int64 => one("i64"),
        Kind::Size => one("libc::size_t"),
        Kind::UIntPtr => one("libc::uintptr_t"),
        Kind::String | Kind::OptString => one("*const c_char"),
        Kind::Strings => one("*mut *mut c_char"),
        Kind::BufOut => vec![(n.clone(), "*mut c_void"), ("count".into(), "libc::size_t")],
        Kind::BufIn => vec![
            (n.clone(), "*const c_void"),
            ("count".into(), "libc::size_t"),
        ],
        Kind::SockAddr => vec![
            (n.clone(), "*const libc::sockaddr"),
            ("addrlen".into(), "libc::socklen_t"),
        ],
        Kind::Closure(k) => one(closure_type(k)),
    }
}

fn closure_type(k: &str) -> &'static str {
    match k {
        "chunk" => "ChunkCallback",
        "completion" => "CompletionCallback",
        "debug" => "DebugCallback",
        "extent" => "ExtentCallback",
        "extent64" => "Extent64Callback",
        "list" => "ListCallback",
        "context" => "ContextCallback",
        _ => unreachable!("checked when parsed"),
    }
}

fn ret_type(r: Ret) -> &'static str {
    match r {
        Ret::Int | Ret::Bool => "c_int",
        Ret::Int64 | Ret::Cookie => "i64",
        Ret::UInt32 => "u32",
        Ret::Unsigned => "c_uint",
        Ret::UInt64 => "u64",
        Ret::SSize => "libc::ssize_t",
        Ret::UIntPtr => "libc::uintptr_t",
        Ret::String => "*mut c_char",
        Ret::StaticString => "*const c_char",
        Ret::Void => "",
    }
}

/// The Rust type the body produces (an `impl CReturn`).
fn ret_rust(r: Ret) -> &'static str {
    match r {
        Ret::Int => "c_int",
        Ret::Bool => "bool",
        Ret::Int64 | Ret::Cookie => "i64",
        Ret::UInt32 => "u32",
        Ret::Unsigned => "c_uint",
        Ret::UInt64 => "u64",
        Ret::SSize => "isize",
        Ret::UIntPtr => "usize",
        Ret::String => "crate::ptr::MallocStr",
        Ret::StaticString => "&'static std::ffi::CStr",
        Ret::Void => "()",
    }
}

/// The `# Safety` lines for the pointer arguments.
fn safety(func: &Func) -> Vec<String> {
    let mut lines = Vec::new();
    if func.handle {
        lines.push("`h` must be NULL or a handle from `nbd_create` that is still open".to_string());
    }
    for a in &func.args {
        let n = &a.name;
        match &a.kind {
            Kind::String | Kind::OptString => {
                lines.push(format!("`{n}` must be NULL or a NUL-terminated string"))
            }
            Kind::Strings => lines.push(format!(
                "`{n}` must be NULL or a NULL-terminated array of NUL-terminated strings"
            )),
            Kind::BufOut => lines.push(format!(
                "`{n}` must be NULL or writable for `count` bytes (it may be uninitialised) \
                 until the command is retired"
            )),
            Kind::BufIn => lines.push(format!(
                "`{n}` must be NULL or readable for `count` bytes until the command is retired"
            )),
            Kind::SockAddr => lines.push(format!(
                "`{n}` must be NULL or point to `addrlen` readable bytes"
            )),
            Kind::Closure(_) => lines.push(format!(
                "`{n}` must be callable (and freeable) with its `user_data`"
            )),
            _ => {}
        }
    }
    lines
}

/// The expression that formats one argument in the `enter:` trace.
fn trace_part(a: &Arg) -> Option<String> {
    let n = &a.name;
    Some(match &a.kind {
        Kind::UInt32 if n == "flags" => format!("format!(\"{n}=0x{{{n}:x}}\")"),
        Kind::Bool | Kind::Int | Kind::UInt32 | Kind::UInt64 | Kind::Int64 | Kind::Size => {
            format!("format!(\"{n}={{{n}}}\")")
        }
        Kind::UIntPtr => format!("format!(\"{n}={{{n}}}\")"),
        Kind::Flags(_) => format!("format!(\"{n}=0x{{{n}:x}}\")"),
        Kind::String | Kind::OptString => {
            format!("format!(\"{n}={{}}\", crate::debug::quote_opt({n}))")
        }
        Kind::Strings => format!("\"{n}=<list>\".to_string()"),
        Kind::BufOut | Kind::BufIn => format!("format!(\"{n}=<buf> count={{count}}\")"),
        Kind::SockAddr => format!("format!(\"{n}=<address> addrlen={{addrlen}}\")"),
        Kind::Closure(k) => format!("\"{k}=<fn>\".to_string()"),
    })
}

fn gen_func(out: &mut String, func: &Func) {
    let cname = format!("nbd_{}", func.name);
    for d in &func.doc {
        if d.is_empty() {
            out.push_str("///\n");
        } else {
            let _ = writeln!(out, "/// {d}");
        }
    }
    let _ = writeln!(out, "///");
    let _ = writeln!(out, "/// Since `LIBNBD_{}`.", func.since);
    let safety = safety(func);
    if !safety.is_empty() {
        let _ = writeln!(out, "///\n/// # Safety\n///");
        let text = safety.join("; ") + ".";
        for line in wrap(&text, 74) {
            let _ = writeln!(out, "/// {line}");
        }
    }
    let mut params = Vec::new();
    if func.handle {
        params.push("h: *mut Handle".to_string());
    }
    for a in &func.args {
        for (n, t) in c_params(a) {
            params.push(format!("{n}: {t}"));
        }
    }
    let ret = ret_type(func.ret);
    let arrow = if ret.is_empty() {
        String::new()
    } else {
        format!(" -> {ret}")
    };
    let _ = writeln!(out, "#[no_mangle]");
    let _ = writeln!(
        out,
        "pub unsafe extern \"C\" fn {cname}({}){arrow} {{",
        params.join(", ")
    );
    let _ = writeln!(out, "    ffi_boundary!(\"{cname}\", |fname| {{");

    // 1. Callbacks become owned first, so they are freed on every path; the
    //    completion callback first of all, so that it is dropped (freed)
    //    last, after the mid-command callbacks, as libnbd documents.
    let mut closures: Vec<&Arg> = func
        .args
        .iter()
        .filter(|a| matches!(a.kind, Kind::Closure(_)))
        .collect();
    closures.sort_by_key(|a| !matches!(a.kind, Kind::Closure("completion")));
    for a in &closures {
        let _ = writeln!(
            out,
            "        // SAFETY: the caller hands the callback over to us (see # Safety).\n        \
             let {n} = unsafe {{ Owned::new({n}) }};",
            n = a.name
        );
    }
    // 2. Strings are read now (for the trace); NULL is checked later.
    for a in &func.args {
        if matches!(a.kind, Kind::String | Kind::OptString) {
            let _ = writeln!(
                out,
                "        // SAFETY: {n} is NULL or a C string (see # Safety).\n        \
                 let {n} = unsafe {{ ptr::opt_cstr({n}) }};",
                n = a.name
            );
        }
    }
    let call_args: Vec<String> = func.args.iter().map(|a| a.name.clone()).collect();

    if !func.handle {
        let body = match &func.body {
            Body::Call(path) => format!("crate::{path}({})", call_args.join(", ")),
            Body::Get(expr) => format!("Ok({expr})"),
            _ => panic!(
                "nbd_{}: a function without a handle needs `call` or `get`",
                func.name
            ),
        };
        let _ = writeln!(
            out,
            "        let result: Result<{}, Error> = {body};\n        result",
            ret_rust(func.ret)
        );
        let _ = writeln!(out, "    }})\n}}\n");
        return;
    }

    let _ = writeln!(
        out,
        "        // SAFETY: h is NULL or open (see # Safety).\n        \
         let h = unsafe {{ ptr::handle(h) }}?;"
    );
    let trace: Vec<String> = func.args.iter().filter_map(trace_part).collect();
    let trace = if trace.is_empty() {
        "String::new".to_string()
    } else if trace.len() == 1 {
        format!("|| {}", trace[0])
    } else {
        format!("|| [{}].join(\" \")", trace.join(", "))
    };
    // A constant `get` (`get true`) without a state check never looks at
    // the handle: name the closure's argument so that it is not "unused".
    let uses_inner = func.states.is_some()
        || func.args.iter().any(|a| matches!(a.kind, Kind::BufOut))
        || !matches!(&func.body, Body::Get(expr) if !expr.contains("inner"));
    let inner = if uses_inner { "inner" } else { "_inner" };
    let _ = writeln!(
        out,
        "        h.call(fname, {trace}, |{inner}| -> Result<{}, Error> {{",
        ret_rust(func.ret)
    );

    // 3. Inside the lock: state check (a read buffer is zeroed before it, as
    //    libnbd does, so a caller ignoring the error sees no stale data).
    let bufout = func.args.iter().find(|a| matches!(a.kind, Kind::BufOut));
    let permitted = func
        .states
        .as_ref()
        .map(|s| format!("Permitted::{}", s.to_uppercase()));
    match (bufout, &permitted) {
        (Some(b), Some(p)) => {
            let _ = writeln!(
                out,
                "            // SAFETY: {n} is NULL or writable for count bytes (see # Safety).\n            \
                 let {n} = unsafe {{ crate::commands::read_buffer(inner, {p}, {n}, count) }}?;",
                n = b.name
            );
        }
        (Some(_), None) => panic!("nbd_{}: a read buffer needs `states`", func.name),
        (None, Some(p)) => {
            let _ = writeln!(out, "            {p}.check(inner.state())?;");
        }
        (None, None) => {}
    }
    // 4. NULL checks in argument order, then flag masks.
    for a in &func.args {
        let n = &a.name;
        match &a.kind {
            Kind::String => {
                let _ = writeln!(out, "            let {n} = ptr::required({n}, \"{n}\")?;");
            }
            Kind::Strings => {
                let _ = writeln!(
                    out,
                    "            // SAFETY: {n} is NULL or a NULL-terminated list (see # Safety).\n            \
                     let {n} = unsafe {{ ptr::string_list({n}, \"{n}\") }}?;"
                );
            }
            Kind::BufIn => {
                let _ = writeln!(
                    out,
                    "            let {n} = crate::commands::write_buffer({n}, count)?;"
                );
            }
            Kind::SockAddr => {
                let _ = writeln!(
                    out,
                    "            // SAFETY: {n} is NULL or addrlen readable bytes (see # Safety).\n            \
                     let {n} = unsafe {{ ptr::sockaddr({n}, addrlen) }}?;"
                );
            }
            Kind::Closure(k) if *k != "completion" => {
                let _ = writeln!(
                    out,
                    "            if {n}.is_null() {{\n                \
                     return Err(Error::NullPointer {{ param: \"{n}\" }});\n            }}"
                );
            }
            _ => {}
        }
    }
    for a in &func.args {
        if let Kind::Flags(mask) = &a.kind {
            let _ = writeln!(
                out,
                "            crate::errors::check_flags(\"{n}\", {n}, crate::constants::{mask})?;",
                n = a.name
            );
        }
    }
    match &func.body {
        Body::Call(path) => {
            let mut args = vec!["inner".to_string()];
            args.extend(call_args);
            let _ = writeln!(out, "            crate::{path}({})", args.join(", "));
        }
        Body::Get(expr) if func.ret == Ret::String => {
            let _ = writeln!(out, "            ptr::MallocStr::new(&{expr})");
        }
        Body::Get(expr) => {
            let _ = writeln!(out, "            Ok({expr})");
        }
        Body::Set(assign) if assign.contains(" = ") => {
            let _ = writeln!(out, "            {assign};\n            Ok(0)");
        }
        Body::Set(place) => {
            let arg = &func.args[0];
            let value = match arg.kind {
                Kind::String | Kind::OptString => format!("{}.to_owned()", arg.name),
                _ => arg.name.clone(),
            };
            let _ = writeln!(out, "            {place} = {value};\n            Ok(0)");
        }
        Body::Manual => unreachable!("manual exports are not generated"),
    }
    let _ = writeln!(out, "        }})");
    let _ = writeln!(out, "    }})\n}}\n");
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn gen_family(f: &Family) -> String {
    let mut out = String::from(HEADER);
    for d in &f.doc {
        if d.is_empty() {
            out.push_str("//!\n");
        } else {
            let _ = writeln!(out, "//! {d}");
        }
    }
    out.push_str(
        "\n#![allow(unused_imports)]\n\n\
         use crate::callbacks::*;\n\
         use crate::errors::Error;\n\
         use crate::handle::Handle;\n\
         use crate::ptr;\n\
         use crate::state::Permitted;\n\
         use std::ffi::{c_char, c_int, c_uint, c_void};\n\n",
    );
    for func in &f.fns {
        if !matches!(func.body, Body::Manual) {
            gen_func(&mut out, func);
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn gen_mod(families: &[Family]) -> String {
    let mut out = String::from(HEADER);
    out.push_str(
        "//! The exported C functions, generated from the API table (`nbd-ffi/api/`).\n\
         //!\n\
         //! Each export here only does what every libnbd call does (panic boundary,\n\
         //! handle lock, debug trace, state check, argument checks) and hands over to\n\
         //! the family module that implements it. Exports marked `manual` in the table\n\
         //! are written by hand in their modules.\n\n",
    );
    for f in families {
        if !f.pending && f.fns.iter().any(|func| !matches!(func.body, Body::Manual)) {
            let _ = writeln!(out, "pub mod {};", f.name);
        }
    }
    out.push_str("pub mod have;\n");
    out
}

fn gen_have(families: &[Family]) -> String {
    let mut out = String::from(HEADER);
    out.push_str(
        "//! One `LIBNBD_HAVE_NBD_<NAME>` macro per API function and callback type.\n\
         //!\n\
         //! C programs test these with `#ifdef` to find out whether the library they\n\
         //! compile against offers a call. cbindgen turns each into\n\
         //! `#define LIBNBD_HAVE_NBD_<NAME> 1`.\n\n\
         use std::ffi::c_int;\n\n",
    );
    let mut callbacks: Vec<&String> = families.iter().flat_map(|f| &f.callbacks).collect();
    callbacks.sort();
    for cb in callbacks {
        let _ = writeln!(
            out,
            "/// The `nbd_{cb}_callback` type is available.\n\
             pub const LIBNBD_HAVE_NBD_{}_CALLBACK: c_int = 1;\n",
            cb.to_uppercase()
        );
    }
    let mut fns: Vec<&Func> = families.iter().flat_map(|f| &f.fns).collect();
    fns.sort_by(|a, b| a.name.cmp(&b.name));
    for func in fns {
        let _ = writeln!(
            out,
            "/// `nbd_{}` is available (since `LIBNBD_{}`).\n\
             pub const LIBNBD_HAVE_NBD_{}: c_int = 1;\n",
            func.name,
            func.since,
            func.name.to_uppercase()
        );
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn version_key(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn gen_syms(families: &[Family]) -> String {
    let mut nodes: BTreeMap<(u32, u32), (String, Vec<String>)> = BTreeMap::new();
    for func in families.iter().flat_map(|f| &f.fns) {
        nodes
            .entry(version_key(&func.since))
            .or_insert_with(|| (func.since.clone(), Vec::new()))
            .1
            .push(format!("nbd_{}", func.name));
    }
    let mut out = String::from(
        "# @generated by nbd-ffi/build.rs from nbd-ffi/api/: edit the table, not this file.\n\
         #\n\
         # Linker version script for libnbd.so.0. Every exported function sits in\n\
         # the version node where libnbd first offered it, so that programs linked\n\
         # against libnbd resolve their versioned references against this library.\n\
         # Each node inherits the one before it; everything not listed (the whole\n\
         # Rust runtime) stays local. nbd-rs's own extensions (nbdrs_*, declared\n\
         # in libnbd-ext.h) come last, in a node of their own.\n",
    );
    let mut prev: Option<String> = None;
    for (version, mut names) in nodes.into_values() {
        names.sort();
        let _ = write!(out, "\nLIBNBD_{version} {{\n  global:\n");
        for n in names {
            let _ = writeln!(out, "    {n};");
        }
        match &prev {
            None => out.push_str("  local: *;\n};\n"),
            Some(p) => {
                let _ = writeln!(out, "}} LIBNBD_{p};");
            }
        }
        prev = Some(version);
    }
    // nbd-rs's own extensions (src/ext.rs, include/libnbd-ext.h), in a
    // node of their own that no libnbd program references.
    let _ = write!(out, "\n{EXT_NODE} {{\n  global:\n");
    for n in EXT_SYMBOLS {
        let _ = writeln!(out, "    {n};");
    }
    if let Some(p) = &prev {
        let _ = writeln!(out, "}} LIBNBD_{p};");
    } else {
        out.push_str("  local: *;\n};\n");
    }
    out
}

/// The version node of the nbd-rs extensions: `nbd_ffi::ext::EXTENSION_NODE`
/// (the abi_symbols test checks that the two agree).
const EXT_NODE: &str = "NBDRS_0.2";

/// The extension functions: `nbd_ffi::ext::EXTENSION_SYMBOLS`.
const EXT_SYMBOLS: [&str; 2] = ["nbdrs_get_timeout", "nbdrs_set_timeout"];
