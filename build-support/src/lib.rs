//! capisan-build: find or fetch CPython source, configure and make one interpreter variant,
//! and write the manifest that everything downstream reads.
//!
//! The pipeline is `source` -> `builder` -> `manifest`. Built variants live in a [`Cache`]
//! outside the checkout, keyed by source hash + variant flags + compiler version, so a repeated
//! build with nothing changed only reads a manifest.

pub mod builder;
pub mod cache;
pub mod error;
pub mod extension;
pub mod fuzzbin;
pub mod manifest;
pub mod package;
pub mod setup;
pub mod source;
pub mod toolchain;
pub mod variant;
pub mod versions;

pub use cache::Cache;
pub use error::BuildError;
pub use manifest::Manifest;
pub use variant::Variant;

/// The CPython version built when the user names none: the one Debian 13 (trixie) ships.
pub const DEFAULT_VERSION: &str = "3.13.5";
