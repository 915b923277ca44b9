//! `rpg train`.

use anyhow::{Result, bail};
use rpg_train::TrainConfig;
use rpg_train::distributed::Launch;

use crate::cli::TrainArgs;
use crate::console::Console;

/// The resolved configuration: defaults, then `--config` (or the resumed
/// run's config.toml), then flags.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let base = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            let mut given = args.options.run_defining_flags();
            if args.config.is_some() {
                given.push("--config".into());
            }
            if !given.is_empty() {
                bail!(
                    "{} cannot change when resuming: the run's own config.toml decides them",
                    given.join(", ")
                );
            }
            if rpg_train::checkpoint::find_last(dir).is_none() {
                return Err(rpg_train::Error::NothingToResume { out: dir.clone() }.into());
            }
            TrainConfig::from_toml_file(&dir.join("config.toml"))?
        }
        (None, Some(file)) => TrainConfig::from_toml_file(file)?,
        (None, None) => TrainConfig::default(),
    };
    let mut cfg = base.merged(&args.options)?;
    if let Some(dir) = &args.resume {
        cfg.out = Some(dir.clone());
    } else if args.out.is_some() {
        cfg.out = args.out.clone();
    }
    Ok(cfg)
}

/// Trains (or resumes) as the flags say.
pub fn run(args: &TrainArgs) -> Result<()> {
    if args.stop_after_epochs == Some(0) {
        bail!("--stop-after-epochs must be positive, got 0 (leave it out to train every epoch)");
    }
    let mut cfg = resolve(args)?;
    if let (None, Some(file)) = (&args.resume, &args.config) {
        let written = cfg.out_dir().join("config.toml");
        rpg_train::output::refuse_overwrite("out", &written, &[file])?;
    }
    let Some(launch) = Launch::from_process()? else {
        // One process; RPG_EXCHANGE=nccl still exchanges (a sum over one
        // rank), to check and measure NCCL on one GPU.
        let comm: Box<dyn rpg_train::distributed::Collective> =
            match std::env::var("RPG_EXCHANGE").as_deref() {
                Ok("nccl") => exchange(Box::new(rpg_train::distributed::Solo), &cfg.device)?,
                _ => Box::new(rpg_train::distributed::Solo),
            };
        rpg_train::train_across(
            cfg,
            args.resume.as_deref(),
            args.stop_after_epochs,
            comm.as_ref(),
            &mut Console::new(),
        )?;
        return Ok(());
    };
    // One process per device: `cuda` is this rank's GPU on its machine.
    if cfg.device == "cuda" {
        cfg.device = format!("cuda:{}", launch.local_rank);
    }
    let comm = exchange(join(&launch)?, &cfg.device)?;
    // Rank 0 reports and writes; the others train silently.
    let mut console = Console::new();
    let mut silent = rpg_train::Silent;
    let events: &mut dyn rpg_train::Events = if launch.rank == 0 {
        &mut console
    } else {
        &mut silent
    };
    rpg_train::train_across(
        cfg,
        args.resume.as_deref(),
        args.stop_after_epochs,
        comm.as_ref(),
        events,
    )
    .map_err(|e| {
        anyhow::Error::from(e).context(format!("rank {} of {}", launch.rank, launch.world))
    })?;
    Ok(())
}

/// How long an exchange may wait for the other ranks before this one
/// gives up (`RPG_COLLECTIVE_TIMEOUT`, seconds).
fn collective_timeout() -> Result<std::time::Duration> {
    let seconds = match std::env::var("RPG_COLLECTIVE_TIMEOUT") {
        Ok(v) => v.parse::<f64>().ok().filter(|s| *s > 0.0).ok_or_else(|| {
            anyhow::anyhow!("RPG_COLLECTIVE_TIMEOUT={v}: give a positive number of seconds")
        })?,
        Err(_) => 300.0,
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// This rank's connection to the others: MPI for the processes an MPI
/// launcher started (the `mpi` build), TCP through rank 0 for torchrun's.
fn join(launch: &Launch) -> Result<Box<dyn rpg_train::distributed::Collective>> {
    let timeout = collective_timeout()?;
    if !launch.launcher.is_mpi() {
        // torchrun's agent holds MASTER_PORT for its own store: the next
        // port, unless RPG_PORT says otherwise.
        let host = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
        let port = match (std::env::var("RPG_PORT"), std::env::var("MASTER_PORT")) {
            (Ok(p), _) => p
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("RPG_PORT={p}: give a port number"))?,
            (Err(_), Ok(p)) => p
                .parse::<u16>()
                .ok()
                .and_then(|p| p.checked_add(1))
                .ok_or_else(|| {
                    anyhow::anyhow!("MASTER_PORT={p}: give a port number below 65535")
                })?,
            (Err(_), Err(_)) => bail!(
                "rank {} of {} was started by {} without MASTER_PORT: set MASTER_ADDR and \
                 MASTER_PORT (torchrun does) or RPG_PORT",
                launch.rank,
                launch.world,
                launch.launcher.name()
            ),
        };
        let comm =
            rpg_train::distributed::Tcp::connect(launch.rank, launch.world, &host, port, timeout)?;
        return Ok(Box::new(comm));
    }
    #[cfg(feature = "mpi")]
    {
        let comm = rpg_train::distributed::Mpi::init(timeout, stop)?;
        Ok(Box::new(comm))
    }
    #[cfg(not(feature = "mpi"))]
    {
        bail!(
            "this process is rank {} of {} ({}), but this rpg was built without MPI: build it \
             with `--features mpi` (`cargo xtask train --features mpi`), or start the ranks \
             with torchrun (docs/distributed.md)",
            launch.rank,
            launch.world,
            launch.launcher.name()
        )
    }
}

/// Ends this rank when an exchange waits too long: the launcher then ends
/// the others.
#[cfg(any(feature = "mpi", feature = "nccl"))]
fn stop(stall: &rpg_train::distributed::Stall) -> ! {
    eprintln!("error: {stall}; stopping");
    std::process::exit(70)
}

/// The gradients' exchange: NCCL between GPUs (the `nccl` build, unless
/// `RPG_EXCHANGE=host`), over `control` for the rest; else `control`.
fn exchange(
    control: Box<dyn rpg_train::distributed::Collective>,
    device: &str,
) -> Result<Box<dyn rpg_train::distributed::Collective>> {
    let nccl = match std::env::var("RPG_EXCHANGE").as_deref() {
        Ok("nccl") => true,
        Ok("host") => false,
        Ok(other) => bail!(
            "RPG_EXCHANGE={other}: give `nccl` (GPU to GPU, the nccl build's default on CUDA) \
             or `host` (through host memory over MPI or TCP)"
        ),
        Err(_) => cfg!(feature = "nccl") && device.starts_with("cuda"),
    };
    if !nccl {
        return Ok(control);
    }
    #[cfg(feature = "nccl")]
    {
        use anyhow::Context as _;
        let gpu = rpg_nn::parse_device(device)?;
        let comm = rpg_train::distributed::Nccl::join(control, &gpu, collective_timeout()?, stop)
            .context("joining the ranks' GPUs over NCCL (RPG_EXCHANGE=host exchanges through the host instead)")?;
        Ok(Box::new(comm))
    }
    #[cfg(not(feature = "nccl"))]
    {
        drop(control);
        bail!(
            "RPG_EXCHANGE=nccl, but this rpg was built without NCCL: build it with \
             `--features nccl` (`cargo xtask cuda-build` does), or leave RPG_EXCHANGE unset"
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn train_args(flags: &[&str]) -> TrainArgs {
        let argv = ["rpg", "train"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Train(args) => *args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn no_flags_is_the_default_config() {
        assert_eq!(resolve(&train_args(&[])).unwrap(), TrainConfig::default());
    }

    #[test]
    fn flags_override_their_keys_and_only_those() {
        let cfg = resolve(&train_args(&[
            "--lr",
            "0.2",
            "--placement",
            "hashed",
            "--ring-scale",
            "4608",
            "--no-ring-wd",
            "--share",
            "fc*",
            "--out",
            "elsewhere",
        ]))
        .unwrap();
        assert_eq!(
            cfg,
            TrainConfig {
                lr: 0.2,
                placement: rpg_core::PlacementKind::Hashed,
                ring_scale: rpg_core::ScaleRule::FixedFanOut(4608),
                ring_wd: false,
                share: vec!["fc*".into()],
                out: Some("elsewhere".into()),
                ..TrainConfig::default()
            }
        );
    }

    #[test]
    fn a_resume_refuses_flags_that_decide_the_run() {
        let args = train_args(&["--resume", "run", "--seed", "3", "--ring-scale", "unit"]);
        let err = resolve(&args).unwrap_err().to_string();
        assert!(err.contains("--ring-scale, --seed cannot change"), "{err}");
    }

    #[test]
    fn help_shows_the_defaults_of_the_code() {
        let help = Cli::command_with_defaults()
            .find_subcommand_mut("train")
            .unwrap()
            .render_long_help()
            .to_string();
        let default = TrainConfig::default();
        assert!(
            help.contains(&format!("[default: {}]", default.lr)),
            "{help}"
        );
        assert!(help.contains(&format!("[default: {}]", default.ring_scale)));
        assert!(help.contains("[default: 0.1]"));
    }
}
