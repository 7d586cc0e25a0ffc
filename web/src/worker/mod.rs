//! The engine's side of the Web Worker: downloads (with progress and the browser cache),
//! model building and scoring, so none of it blocks the page.
//!
//! Jobs run as futures on the worker's event loop and yield between sequences, which is where
//! a `Cancel` message is seen. Downloaded files stay in JS memory (`Uint8Array`s) and weights
//! are copied into wasm memory one tensor at a time.
//!
//! One module per concern. Plain Rust, tested natively: [`error`] (the failures and their
//! protocol codes), [`download`] (byte caps, HTTP answers), [`storage`] (what fits where),
//! [`grouping`] (batches) and [`shape`] (results, model info, the CLI's records). wasm32 only,
//! the browser calls: `queue` (the engine, its job queue and dispatch), `fetch` (fetch and the
//! Cache API), `load` (safetensors, GGUF, WebGPU, pipeline), `scorer` (what scores a loaded
//! model), `score`, `benchmark` (suites of the Evaluate view), `steps`, `remote`, `images` (what goes
//! to an endpoint as data URLs) and `bench`.

pub mod download;
pub mod error;
pub mod grouping;
pub mod shape;
pub mod storage;

#[cfg(target_arch = "wasm32")]
mod bench;
#[cfg(target_arch = "wasm32")]
mod benchmark;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod images;
#[cfg(target_arch = "wasm32")]
mod load;
#[cfg(target_arch = "wasm32")]
mod queue;
#[cfg(target_arch = "wasm32")]
mod remote;
#[cfg(target_arch = "wasm32")]
mod score;
#[cfg(target_arch = "wasm32")]
mod scorer;
#[cfg(target_arch = "wasm32")]
mod steps;

#[cfg(target_arch = "wasm32")]
pub use queue::start;
#[cfg(target_arch = "wasm32")]
pub use scorer::BACKEND;
