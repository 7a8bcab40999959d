//! Builds sekisho's kernel programs (ebpf/datapath) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker, so that `cargo build` embeds the object in the daemon.
//! `cargo xtask setup` installs what this needs.

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/datapath");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sekisho-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
