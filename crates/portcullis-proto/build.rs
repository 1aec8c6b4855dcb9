//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and tonic-prost-build, and writes the file
//! descriptor set that gRPC reflection serves.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["proto"])?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("portcullis_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    // `google.protobuf.Struct` is our own `pb::Struct`: prost's map plus already-encoded entries, so a
    // cached identity's metadata is encoded once (see `src/lib.rs`); `OkHttpResponse` likewise carries
    // the identity's headers encoded once.
    tonic_prost_build::configure()
        .extern_path(".google.protobuf.Struct", "crate::Struct")
        .extern_path(
            ".envoy.service.auth.v3.OkHttpResponse",
            "crate::OkHttpResponse",
        )
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
