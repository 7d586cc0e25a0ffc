//! The page: the Leptos app, which talks to the engine's worker.

fn main() {
    #[cfg(target_arch = "wasm32")]
    rewardlens_web::ui::mount();
}
