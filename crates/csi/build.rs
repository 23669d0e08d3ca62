//! Generates the gRPC code of the CSI v1 subset and the plugin registration API.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .compile_protos(
            &["proto/csi.proto", "proto/pluginregistration.proto"],
            &["proto", "/usr/include"],
        )
        .expect("cannot compile the CSI protos (is protoc installed? scripts/install-deps.sh)");
}
