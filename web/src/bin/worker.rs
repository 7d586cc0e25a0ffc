//! The Web Worker that runs the engine (loaded by trunk's `worker_loader.js`).

fn main() {
    #[cfg(target_arch = "wasm32")]
    rewardlens_web::worker::start();
}
