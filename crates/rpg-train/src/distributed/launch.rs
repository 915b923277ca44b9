//! Which process of a data-parallel run this is, from the launcher's
//! environment: OpenMPI's `mpirun`, MPICH's `mpiexec`, Slurm's `srun` or
//! PyTorch's `torchrun`. No variables (or a world of 1): one process.

use rpg_core::InvalidSetting;

/// The launcher that started the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// OpenMPI (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// MPICH or Hydra (`PMI_RANK`, `PMI_SIZE`).
    Mpich,
    /// Slurm (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
    /// torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`).
    Torchrun,
}

impl Launcher {
    /// How users call it.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::OpenMpi => "mpirun (OpenMPI)",
            Launcher::Mpich => "mpiexec (MPICH)",
            Launcher::Slurm => "srun (Slurm)",
            Launcher::Torchrun => "torchrun",
        }
    }

    /// Whether the processes can reach each other through MPI (torchrun's
    /// cannot: it starts them without MPI's wiring; they connect over TCP).
    pub fn is_mpi(self) -> bool {
        !matches!(self, Launcher::Torchrun)
    }
}

/// This process's place in a run of several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Rank, 0 to `world - 1`.
    pub rank: usize,
    /// Processes in the run.
    pub world: usize,
    /// Rank among the processes on this machine (picks `cuda:N`).
    pub local_rank: usize,
    /// Who started it.
    pub launcher: Launcher,
}

impl Launch {
    /// The launch described by `var` (the process environment, or a map in
    /// tests); `None` for one process. Variables that contradict each other
    /// are an error naming them.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, InvalidSetting> {
        let sets = [
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
            ),
            (Launcher::Mpich, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
            (
                Launcher::Slurm,
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
            ),
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ];
        for (launcher, rank_var, world_var, local_var) in sets {
            let (Some(rank), Some(world)) = (var(rank_var), var(world_var)) else {
                continue;
            };
            let number = |name: &'static str, value: &str| {
                value.trim().parse::<usize>().map_err(|_| {
                    InvalidSetting::new(name, value, "must be a non-negative whole number")
                })
            };
            let (rank, world) = (number(rank_var, &rank)?, number(world_var, &world)?);
            if world == 0 || rank >= world {
                return Err(InvalidSetting::new(
                    rank_var,
                    rank,
                    format!("must be below {world_var} = {world}"),
                ));
            }
            let local_rank = match var(local_var) {
                Some(v) => number(local_var, &v)?,
                None => rank,
            };
            if world == 1 {
                return Ok(None);
            }
            return Ok(Some(Self {
                rank,
                world,
                local_rank,
                launcher,
            }));
        }
        Ok(None)
    }

    /// The launch of this process.
    pub fn from_process() -> Result<Option<Self>, InvalidSetting> {
        Self::from_env(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn each_launcher_is_read_and_one_process_is_none() {
        let open = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ];
        let launch = Launch::from_env(env(&open)).unwrap().unwrap();
        assert_eq!((launch.rank, launch.world, launch.local_rank), (1, 2, 1));
        assert_eq!(launch.launcher, Launcher::OpenMpi);
        let mpich = [("PMI_RANK", "3"), ("PMI_SIZE", "4")];
        let launch = Launch::from_env(env(&mpich)).unwrap().unwrap();
        assert_eq!((launch.rank, launch.local_rank), (3, 3));
        let slurm = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "0"),
        ];
        assert_eq!(
            Launch::from_env(env(&slurm)).unwrap().unwrap().launcher,
            Launcher::Slurm
        );
        let torch = [("RANK", "2"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "0")];
        let launch = Launch::from_env(env(&torch)).unwrap().unwrap();
        assert!(!launch.launcher.is_mpi());
        assert_eq!(Launch::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            Launch::from_env(env(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap(),
            None
        );
    }

    #[test]
    fn contradictions_name_the_variable() {
        let err = Launch::from_env(env(&[("RANK", "4"), ("WORLD_SIZE", "4")])).unwrap_err();
        assert_eq!(err.key, "RANK");
        let err = Launch::from_env(env(&[("PMI_RANK", "x"), ("PMI_SIZE", "2")])).unwrap_err();
        assert_eq!(err.key, "PMI_RANK");
    }
}
