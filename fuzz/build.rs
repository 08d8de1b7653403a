//! Extension modules loaded at run time resolve the C API from this binary, which links
//! libpython statically: export its symbols.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic");
}
