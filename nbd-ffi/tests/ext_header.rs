//! include/libnbd-ext.h, the header of nbd-rs's extensions: it compiles
//! as C and C++ together with libnbd.h (warnings are errors), and a C
//! program using it links against our libnbd.so.0 and gets the behaviour
//! documented there (the timeout's setter and getter).

mod common;

use common::{assert_success, cc, cxx, repo_root, run, scratch};
use std::process::Command;

const PROGRAM: &str = r#"#include <errno.h>
#include <stdio.h>
#include <libnbd.h>
#include <libnbd-ext.h>
#include <libnbd-ext.h> /* the guard works */

int
main (void)
{
  struct nbd_handle *h = nbd_create ();
  int ok = h != NULL && NBDRS_HAVE_TIMEOUT == 1
    && nbdrs_get_timeout (h) == 0
    && nbdrs_set_timeout (h, 1234) == 0
    && nbdrs_get_timeout (h) == 1234
    && nbdrs_set_timeout (h, UINT64_MAX) == -1
    && nbd_get_errno () == EINVAL
    && nbdrs_get_timeout (NULL) == -1;
  nbd_close (h);
  printf ("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
"#;

#[test]
fn extension_header_compiles_links_and_works() {
    let so = common::libnbd_so();
    let libdir = so.parent().unwrap().to_path_buf();
    let dir = scratch("ext-header");
    let c_file = dir.join("ext.c");
    let cxx_file = dir.join("ext.cc");
    std::fs::write(&c_file, PROGRAM).unwrap();
    std::fs::write(&cxx_file, PROGRAM).unwrap();
    let exe = dir.join("ext");
    run(cc()
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(repo_root().join("include"))
        .arg(&c_file)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&libdir)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-lnbd"));
    run(cxx()
        .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(repo_root().join("include"))
        .arg("-c")
        .arg(&cxx_file)
        .arg("-o")
        .arg(dir.join("ext.o")));
    let out = Command::new(&exe).output().expect("run ext");
    assert_success("ext", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
