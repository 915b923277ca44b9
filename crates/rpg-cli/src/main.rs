//! The `rpg` command line (`cargo xtask <task>` runs it in release mode).
//! Arguments are in `cli`, each command's body in `commands`, the console
//! rendering of a run's events in `console`; the work is the `rpg_train`
//! library's. The process-wide tuning (allocator, thread pools) is the
//! binary's too: a library does not set another program's environment.

mod allocator;
mod cli;
mod commands;
mod console;
mod errors;
mod threads;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: allocator::CacheLineAligned = allocator::CacheLineAligned;

/// `rpg eval ... | head -1` ends like any Unix tool's output into a closed
/// pipe: quietly, by SIGPIPE. (Rust ignores SIGPIPE, so every `println!`
/// would panic instead.) Everything rpg writes to files is atomic, so a
/// run ended this way resumes from its last checkpoint.
fn die_quietly_on_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: at the start of main, before any thread exists; restoring the
    // default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipes();
    allocator::retain_freed_memory();
    threads::shorten_candle_worker_spin();
    threads::pin_thread_counts();
    let cli = match Cli::try_parse_with_defaults() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line, and where to look for more.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let result = threads::in_worker_pool(move || run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the first line of each cause (Candle appends a
            // backtrace on later lines when RUST_BACKTRACE is set).
            let mut message = String::new();
            for cause in e.chain() {
                let text = errors::as_user_gave_it(cause);
                let line = text.lines().next().unwrap_or_default().trim();
                // Typed errors often show their source already.
                if line.is_empty() || message.ends_with(line) {
                    continue;
                }
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(line);
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The command's body, on whichever thread runs it.
fn run(cli: Cli) -> anyhow::Result<()> {
    // The whole command runs on this thread's kernel choice.
    let _kernels = cli.kernels.scope();
    match cli.command {
        Command::Train(args) => commands::train::run(&args),
        // Only training runs data-parallel: several ranks of another
        // command would each write the same outputs.
        _ if matches!(
            rpg_train::distributed::Launch::from_process(),
            Ok(Some(_)) | Err(_)
        ) =>
        {
            Err(anyhow::anyhow!(
                "only `rpg train` runs as several processes: start this command as one process \
                 (without mpirun, srun or torchrun)"
            ))
        }
        Command::Eval(args) => commands::eval::run(&args),
        Command::Models(args) => commands::models::run(&args),
        Command::Compress(args) => commands::compress::run(&args),
        Command::Export(args) => commands::export::run(&args),
        Command::Bench(args) => commands::bench::run(&args, cli.kernels),
        Command::Sweep(args) => commands::sweep::run(&args),
        Command::Selftest(args) => commands::selftest::run(&args),
        Command::Reproduce(args) => commands::reproduce::run(&args),
        Command::Predict(args) => commands::predict::run(&args),
    }
}
