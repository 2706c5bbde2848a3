//! Fails early, with what to do, when the build is set to link RocksDB's
//! prebuilt library (`ROCKSDB_LIB_DIR`, set in `.cargo/config.toml`) and the
//! library is not there: otherwise the first sign would be the linker's
//! "unable to find library -lrocksdb" after minutes of compiling.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ROCKSDB_COMPILE");
    let compile = env::var("ROCKSDB_COMPILE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let Some(lib_dir) = env::var_os("ROCKSDB_LIB_DIR").filter(|_| !compile) else {
        return;
    };
    let lib = Path::new(&lib_dir).join("librocksdb.so");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists() {
        panic!(
            "RocksDB's prebuilt library {} is missing: run scripts/install-deps.sh \
             (it installs it on x86_64 Linux), or set ROCKSDB_COMPILE=1 to compile \
             librocksdb from C++ (12 to 32 minutes on 2 cores)",
            lib.display()
        );
    }
}
