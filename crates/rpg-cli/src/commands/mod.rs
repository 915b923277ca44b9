//! One module per subcommand: turn the arguments into the library's typed
//! inputs, run the work, print the result. `anyhow` with context lives here
//! and nowhere below.

pub mod bench;
pub mod compress;
pub mod eval;
pub mod export;
pub mod models;
pub mod predict;
pub mod reproduce;
pub mod selftest;
pub mod sweep;
pub mod train;

/// A closed pipe (`rpg models | head`) is not an error.
fn closed_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}
