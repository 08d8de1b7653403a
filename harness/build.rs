//! With feature `cpython`: bind and link the CPython variant named by `CAPISAN_VARIANT`
//! (default `asan`) of the line `CAPISAN_VERSION` (default: the default version's line), read
//! from its manifest (`CAPISAN_MANIFEST` names one explicitly).
//! bindgen covers the C API's functions; `csrc/shim.c` exports the static inline functions and
//! macros (Py_INCREF, Py_REFCNT, ...) compiled with the variant's own sanitizer flags.

fn main() {
    for var in [
        "CAPISAN_VARIANT",
        "CAPISAN_VERSION",
        "CAPISAN_MANIFEST",
        "CAPISAN_CACHE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // pyo3-ffi's version cfgs: `Py_3_N` is set (feature `cpython`) for every N up to the bound
    // minor version ("at least 3.N"), so code newer than a line is `#[cfg(Py_3_N)]`.
    for n in 8..=16 {
        println!("cargo::rustc-check-cfg=cfg(Py_3_{n})");
    }
    println!("cargo::rustc-check-cfg=cfg(capisan_asan)");
    #[cfg(feature = "cpython")]
    cpython::bind_and_link();
}

#[cfg(feature = "cpython")]
mod cpython {
    use std::path::PathBuf;

    use capisan_build::{Cache, Manifest, Variant};

    fn manifest() -> Manifest {
        if let Ok(path) = std::env::var("CAPISAN_MANIFEST") {
            return Manifest::load(path.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        }
        let variant: Variant = std::env::var("CAPISAN_VARIANT")
            .unwrap_or_else(|_| "asan".into())
            .parse()
            .unwrap_or_else(|e| panic!("CAPISAN_VARIANT: {e}"));
        let version = std::env::var("CAPISAN_VERSION").ok();
        let cache = Cache::resolve(None).with_version(version.as_deref());
        Manifest::find(&cache, variant, None)
            .unwrap_or_else(|e| panic!("capisan needs a built CPython: {e}"))
    }

    pub fn bind_and_link() {
        let m = manifest();
        let sanitized = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
        if m.variant == Variant::Asan && !sanitized.contains("address") {
            panic!(
                "the asan variant must be linked into an ASan-instrumented Rust binary \
                 (RUSTC_BOOTSTRAP=1, -Zsanitizer=address): build through `cargo xtask fuzz`, \
                 or set CAPISAN_VARIANT=pydebug"
            );
        }
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
        let includes: Vec<String> = m
            .include_dirs
            .iter()
            .map(|d| format!("-I{}", d.display()))
            .collect();

        println!("cargo:rerun-if-changed=csrc/shim.c");
        println!("cargo:rerun-if-changed=csrc/failalloc.c");
        println!("cargo:rerun-if-changed=csrc/wrapper.h");
        println!("cargo:rerun-if-changed={}", m.libpython_static.display());

        bindgen::Builder::default()
            .header("csrc/wrapper.h")
            .clang_args(&includes)
            // `_Py_BuildValue_SizeT`: what `Py_BuildValue` names under PY_SSIZE_T_CLEAN before 3.13.
            .allowlist_function(
                "Py.*|_Py_GetGlobalRefTotal|_Py_GetRefTotal|_PyObject_GC_.*|_Py_BuildValue_SizeT",
            )
            .allowlist_var("Py.*|_Py_.*Struct")
            .allowlist_type("PyObject|PyTypeObject|Py_ssize_t|visitproc")
            .layout_tests(false)
            .generate_comments(false)
            .generate()
            .expect("bindgen over Python.h")
            .write_to_file(out.join("bindings.rs"))
            .expect("writing bindings.rs");

        let mut shim = cc::Build::new();
        shim.file("csrc/shim.c")
            .file("csrc/failalloc.c")
            .compiler(&m.compiler.cc)
            .warnings(true)
            .flag("-g")
            .flag("-O1");
        for d in &m.include_dirs {
            shim.include(d);
        }
        if m.variant == Variant::Valgrind {
            // valgrind 3.19 cannot read clang-22's default DWARF 5.
            shim.flag("-gdwarf-4");
        }
        if m.variant == Variant::Asan {
            // Defaults baked into the binary (the environment still overrides them), so a direct
            // `cargo fuzz run` or a copied fuzzer gets leak checks off and aborts on error.
            let env = m.env();
            let get = |k: &str| {
                env.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let (asan, ubsan) = (get("ASAN_OPTIONS"), get("UBSAN_OPTIONS"));
            shim.define(
                "CAPISAN_ASAN_DEFAULTS",
                Some(format!("\"{asan}\"").as_str()),
            );
            shim.define(
                "CAPISAN_UBSAN_DEFAULTS",
                Some(format!("\"{ubsan}\"").as_str()),
            );
            shim.flag("-fsanitize=address,undefined")
                .flag("-fno-sanitize=function")
                .flag("-fno-omit-frame-pointer");
        }
        shim.compile("capisan_shim");

        let lib = &m.libpython_static;
        let name = lib
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("lib")
            .to_string();
        println!(
            "cargo:rustc-link-search=native={}",
            lib.parent().unwrap().display()
        );
        // Whole archive: extension modules loaded at run time need every C-API symbol.
        println!("cargo:rustc-link-lib=static:+whole-archive={name}");
        for l in &m.link_libs {
            if let Some(l) = l.strip_prefix("-l") {
                println!("cargo:rustc-link-lib={l}");
            }
        }
        let (_, minor) = capisan_build::source::validate_version(&m.version)
            .unwrap_or_else(|e| panic!("manifest version: {e}"));
        for n in 8..=minor {
            println!("cargo:rustc-cfg=Py_3_{n}");
        }
        if m.variant == Variant::Asan {
            println!("cargo:rustc-cfg=capisan_asan");
        }
        println!(
            "cargo:rustc-env=CAPISAN_MANIFEST_PATH={}",
            m.dir().join("manifest.json").display()
        );
        println!("cargo:rustc-env=CAPISAN_BUILT_VARIANT={}", m.variant);
        println!("cargo:rustc-env=CAPISAN_BUILT_VERSION={}", m.version);
    }
}
