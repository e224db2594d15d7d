//! `cargo run --release --example train`: ConVIRT pretraining.
//!
//! Not there yet: the engine (kernels, autograd, profiler) is in place; the ResNet and BERT
//! encoders, the data pipeline and the training loop come next. Until then this checks that a
//! GPU adapter is usable and says what works today.

fn main() {
    match convirt::Gpu::shared() {
        Ok(gpu) => {
            println!("convirt: device ready: {}", gpu.describe());
            println!(
                "ConVIRT training is not implemented yet (it needs the ResNet and BERT encoders).\n\
                 What works today:\n  \
                 cargo test --release                        # every kernel against its CPU reference\n  \
                 cargo run --release --example bench -- all  # kernel throughput on this adapter"
            );
        }
        Err(e) => {
            eprintln!("convirt: {e}");
            std::process::exit(1);
        }
    }
}
