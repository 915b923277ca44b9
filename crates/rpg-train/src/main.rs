//! The `rpg` command line.
fn main() -> std::process::ExitCode {
    eprintln!("error: the rpg trainer is not built yet: see ARCHITECTURE.md");
    std::process::ExitCode::FAILURE
}
