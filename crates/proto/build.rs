//! Compiles every `proto/ferrishop/**/*.proto` of the workspace with protox (a
//! pure-Rust protobuf compiler, so no `protoc` is needed and nothing is
//! downloaded), writes the encoded `FileDescriptorSet` to `OUT_DIR` for server
//! reflection, and generates prost messages plus tonic clients and servers.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use protox::prost::Message as _;

/// Name of the encoded descriptor set in `OUT_DIR`, included by `src/lib.rs`.
const DESCRIPTOR_FILE: &str = "ferrishop_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The buf module root: imports are written relative to it
    // (`import "ferrishop/common/v1/common.proto";`).
    let proto_root = manifest_dir.join("../../proto");
    let package_root = proto_root.join("ferrishop");

    // A directory makes cargo re-run this script when anything below it changes.
    println!("cargo:rerun-if-changed={}", package_root.display());

    let mut files = Vec::new();
    collect_protos(&package_root, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files under {}", package_root.display()).into());
    }
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|file| file.strip_prefix(&proto_root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    // Source info keeps the proto comments: they become rustdoc on the generated
    // items and stay visible to reflection clients (`grpcurl describe`). Imports
    // (google/protobuf/timestamp.proto, bundled with protox) are included so the
    // set is self-contained for tonic-reflection.
    let fds = protox::Compiler::new([&proto_root])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(&relative)?
        .file_descriptor_set();

    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

/// Appends every `*.proto` file below `dir` to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
