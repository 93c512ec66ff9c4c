//! Helpers shared by the integration tests: where things are, building
//! libnbd.so.0 from the static library cargo just compiled, and running the
//! C compiler.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The workspace root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("nbd-ffi sits in the workspace root")
        .to_path_buf()
}

/// The nbd-ffi crate directory.
pub(crate) fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of the build running this test (found from the test
/// executable, which lives in `target/<profile>/deps/`).
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// A scratch directory for one test, emptied first.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = profile_dir().join("nbd-ffi-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The `(name, version node)` pairs of a symbol list `libnbd-VERSION.symbols`,
/// from shared/abi when present (the project's source of truth), else the
/// committed copy in `nbd-ffi/abi/`.
pub(crate) fn symbol_list(version: &str) -> Vec<(String, String)> {
    let file = format!("libnbd-{version}.symbols");
    let shared = repo_root().join("../shared/abi").join(&file);
    let local = crate_dir().join("abi").join(&file);
    let path = if shared.exists() { shared } else { local };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().expect("name").to_string();
            let version = parts.next().expect("version").to_string();
            (name, version)
        })
        .collect()
}

/// The required ABI, libnbd 1.24's: 165 `(name, version node)` pairs.
pub(crate) fn abi_symbols() -> Vec<(String, String)> {
    symbol_list("1.24")
}

/// libnbd 1.14's ABI (126 functions), which 1.24's must contain unchanged.
pub(crate) fn abi_symbols_1_14() -> Vec<(String, String)> {
    symbol_list("1.14")
}

/// Where `scripts/install-deps.sh` extracts libnbd 1.24 (its programs,
/// library and header): `LIBNBD_LATEST`, else `/tmp/libnbd-latest`.
/// Fails the test, saying how to make it, when it is missing (CI always
/// has it).
pub(crate) fn latest_root() -> PathBuf {
    let root = match std::env::var_os("LIBNBD_LATEST") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/tmp/libnbd-latest"),
    };
    assert!(
        root.join("sysroot/usr/include/libnbd.h").is_file(),
        "libnbd 1.24 is not extracted under {}: run scripts/install-deps.sh, or \
         ../shared/tools/libnbd-latest.sh {0} (set LIBNBD_LATEST to use another root)",
        root.display()
    );
    root
}

/// The directory of libnbd 1.24's `libnbd.h`, the reference header (it is
/// the only header there, so it can go on the include path as it is).
pub(crate) fn latest_include() -> PathBuf {
    latest_root().join("sysroot/usr/include")
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest nbd-ffi static library of this profile: cargo compiles it
/// (as `deps/libnbd_ffi-<hash>.a`) together with the rlib these tests link.
fn newest_archive() -> PathBuf {
    let dir = profile_dir();
    let mut candidates = vec![dir.join("libnbd_ffi.a")];
    if let Ok(entries) = std::fs::read_dir(dir.join("deps")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libnbd_ffi-") && name.ends_with(".a") {
                candidates.push(e.path());
            }
        }
    }
    candidates
        .into_iter()
        .filter_map(|p| mtime(&p).map(|t| (t, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no libnbd_ffi static library found; cargo should have built one")
}

/// Builds `target/<profile>/libnbd.so.0` with `build-so.sh` if it is missing
/// or older than the static library, and returns its path.
pub(crate) fn libnbd_so() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let so = dir.join("libnbd.so.0");
            let archive = newest_archive();
            let stale = match (mtime(&so), mtime(&archive)) {
                (Some(so_t), Some(a_t)) => so_t < a_t,
                _ => true,
            };
            if stale {
                let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
                let target = dir.parent().unwrap();
                let out = Command::new(crate_dir().join("build-so.sh"))
                    .arg(&profile)
                    .arg(&archive)
                    .env("CARGO_TARGET_DIR", target)
                    .output()
                    .expect("run build-so.sh");
                assert_success("build-so.sh", &out);
            }
            so
        })
        .clone()
}

/// Panics with the command's output unless it succeeded.
pub(crate) fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a compiler (or any tool) and panics with its output if it fails.
pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), &out);
    out
}

/// The C compiler (`$CC`, else `cc`).
pub(crate) fn cc() -> Command {
    Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
}

/// The C++ compiler (`$CXX`, else `c++`).
pub(crate) fn cxx() -> Command {
    Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".into()))
}

/// Debian's libnbd header, the reference our header is compared with.
pub(crate) const SYSTEM_HEADER: &str = "/usr/include/libnbd.h";

/// Whether the reference header is installed; prints why a test is
/// skipped when it is not.
pub(crate) fn have_system_header(test: &str) -> bool {
    if Path::new(SYSTEM_HEADER).exists() {
        true
    } else {
        eprintln!(
            "SKIPPED {test}: {SYSTEM_HEADER} is missing (install Debian's libnbd-dev to compare with it)"
        );
        false
    }
}
