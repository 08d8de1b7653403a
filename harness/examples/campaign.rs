//! From Rust, what `cargo xtask fuzz-ext` + `triage` + `repro` do: find the built asan variant,
//! build the fuzz binary and the bug zoo extension with the variant's flags, run a 10-second
//! campaign on one planted bug, triage it into buckets, and write a C and a Python reproducer
//! for the first bucket.
//!
//! Needs the asan variant (`cargo xtask build-asan`). Run with
//! `cargo run -p capisan --example campaign [OUT_DIR]`; it prints one `bucket:` line per bucket
//! and exits 1 when the campaign found nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use capisan::campaign::{self, Campaign, CampaignSpec};
use capisan::detect::BugClass;
use capisan::env::{names, HarnessEnv};
use capisan::ops::{Op, Resolved};
use capisan::repro::{self, Expect};
use capisan_build::{extension, fuzzbin, Cache, Manifest, Variant};

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("the campaign found no bucket");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate sits in the workspace");
    let out = std::env::args_os().nth(1).map_or_else(
        || std::env::temp_dir().join("capisan-example"),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&out);

    // 1. The variant, the fuzz binary linked against it, and the extension under test.
    let cache = Cache::resolve(None);
    let manifest = Manifest::find(&cache, Variant::Asan, None)?;
    let binary = fuzzbin::build_fuzz_binary(root, "capi_sequences", &manifest)?;
    let zoo = extension::build_extension(
        &cache,
        &manifest,
        &root.join("tests/bugzoo/bugzoo.c"),
        Some(&out.join("ext")),
    )?;
    println!("built {} and {}", binary.display(), zoo.so.display());

    // 2. A short campaign on one planted bug, from the checkout's seeds plus one input of
    //    ours (an op list: make an int, pass it to the extension), ending at the first finding.
    let seeds = out.join("seeds");
    std::fs::create_dir_all(&seeds)?;
    let call = r#"[{"NewInt": {"dst": 0, "value": 8}},
                   {"CallExt": {"func": 0, "nargs": 1, "args": [0, 0, 0], "dst": 1}}]"#;
    let ops: Vec<Op> = serde_json::from_str(call)?;
    std::fs::write(seeds.join("call.json"), serde_json::to_vec(&ops)?)?;
    let spec = CampaignSpec {
        target: "capi_sequences".into(),
        manifest,
        binary,
        dir: out.join("campaign"),
        harness: HarnessEnv {
            ext: Some(zoo.module.clone()),
            ext_path: Some(zoo.dir.clone()),
            ext_funcs: vec!["double_free".into()],
            ..HarnessEnv::default()
        },
        pythonmalloc: None,
        seconds: 10,
        seed: Some(1),
        jobs: 1,
        stop_at_first_finding: true,
        seeds: vec![seeds, root.join("corpora/capi_sequences")],
        libfuzzer: Vec::new(),
        spec_file: None,
    };
    let outcome = campaign::run(&spec, |_| {})?;

    // 3. Triage: the outcome holds the buckets (`campaign::triage_dir` re-derives them later).
    for b in &outcome.buckets {
        println!("bucket: {} ({} input(s))", b.signature, b.count);
    }
    let Some(first) = outcome.buckets.first() else {
        return Ok(false);
    };

    // 4. A reproducer: re-run the input once with the harness dumping its resolved ops, then
    //    emit the C and Python programs that make the same calls.
    let c = Campaign::load(&spec.dir)?;
    let dump = out.join("resolved.json");
    c.run_once(
        &first.artifacts[0],
        &[(names::DUMP_RESOLVED, dump.display().to_string())],
    )?;
    let resolved: Resolved = serde_json::from_slice(&std::fs::read(&dump)?)?;
    let expect = match first.finding.class {
        BugClass::ReferenceLeak => Expect::Leak,
        BugClass::GcTraversal => Expect::GcTraversal,
        _ => Expect::Crash,
    };
    let dir = out.join("repro");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("repro.c"), repro::c::emit(&resolved, expect))?;
    if let Ok(py) = repro::python::emit(&resolved, expect) {
        std::fs::write(dir.join("repro.py"), py)?;
    }
    println!(
        "reproducer for {} ({} ops): {}",
        first.signature,
        resolved.ops.len(),
        dir.display()
    );
    Ok(true)
}
