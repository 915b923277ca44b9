//! The CUDA toolchain for `--features cuda` builds on machines without a CUDA
//! install (no GPU is needed to compile).
//!
//! `cargo xtask cuda-toolchain` installs NVIDIA's PyPI wheels of the CUDA 13.0
//! compiler, headers and libraries into `.cuda-toolchain/` at the project root
//! (never system-wide), adds the unversioned `lib*.so` links the linker asks
//! for, and builds link stubs for the driver library (`libcuda.so.1`, which
//! belongs to the NVIDIA driver and has no wheel) and for NCCL
//! (`libnccl.so.2`, whose wheel is 305 MB): shared libraries with those
//! SONAMEs defining every entry point cudarc declares. The stubs are only
//! linked against, never loaded: on a GPU machine the driver's own
//! `libcuda.so.1` and NCCL (PyTorch's wheel, or NVIDIA's package) are found
//! at start-up.
//!
//! CUDA 13.0 is pinned: the GPU machines we target run driver 580.x, and PTX
//! built by a newer compiler would not load there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the toolchain is installed, relative to the project root.
pub const TOOLCHAIN_DIR: &str = ".cuda-toolchain";

/// The pinned wheels: compiler, device libraries, headers, and the runtime
/// libraries candle links (cudart, nvrtc, curand, cublas/cublasLt), and
/// cuDNN 9.14, the version the GPU machines carry (a 9.x that CUDA 13.0
/// drivers load).
const WHEELS: &[&str] = &[
    "nvidia-cudnn-cu13==9.14.0.64",
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-curand==10.4.0.35",
    "nvidia-cublas==13.0.2.14",
];

/// Compute capability the kernels are built for when no GPU can be asked.
pub const DEFAULT_COMPUTE_CAP: &str = "90";

/// Shared libraries that need an unversioned name for `-l`.
const LINKED_LIBRARIES: &[&str] = &[
    "libcudart.so.13",
    "libnvrtc.so.13",
    "libcurand.so.10",
    "libcublas.so.13",
    "libcublasLt.so.13",
];

/// `CUDA_ROOT` of the installed toolchain: the wheels' common prefix.
pub fn cuda_root(project: &Path) -> PathBuf {
    project.join(TOOLCHAIN_DIR).join("nvidia/cu13")
}

/// Whether the pinned wheels are installed: nvcc, and the marker listing
/// exactly the pinned wheels (written by `install` after them).
fn wheels_installed(project: &Path) -> bool {
    cuda_root(project).join("bin/nvcc").is_file()
        && std::fs::read_to_string(project.join(TOOLCHAIN_DIR).join("wheels.txt"))
            .is_ok_and(|s| s == WHEELS.join("\n"))
}

/// Whether the project toolchain is complete: the wheels and every link
/// stub.
pub fn is_installed(project: &Path) -> bool {
    let stubs = cuda_root(project).join("lib/stubs");
    wheels_installed(project) && STUBS.iter().all(|stub| stubs.join(stub.file).is_file())
}

/// Installs (or completes) the toolchain; idempotent.
pub fn install(project: &Path, cargo: impl Fn() -> Command) -> Result<()> {
    let dir = project.join(TOOLCHAIN_DIR);
    let root = cuda_root(project);
    if is_installed(project) {
        eprintln!("CUDA toolchain already installed in {}", dir.display());
        return Ok(());
    }
    if wheels_installed(project) {
        // Only a link stub is missing (one added since the install).
        for stub in STUBS {
            build_stub(&root, stub, &cargo)?;
        }
        return Ok(());
    }
    eprintln!(
        "installing the CUDA 13.0 toolchain from PyPI into {} (1.6 GB with cuDNN)...",
        dir.display()
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"])
        .arg("--target")
        .arg(&dir)
        .args(WHEELS)
        .status()
        .with_context(|| {
            format!("running `{python} -m pip` (set PYTHON to another interpreter)")
        })?;
    if !status.success() {
        bail!("pip could not install the CUDA wheels ({status}); is PyPI reachable?");
    }
    let lib = root.join("lib");
    for versioned in LINKED_LIBRARIES {
        let unversioned = versioned
            .split(".so")
            .next()
            .unwrap_or(versioned)
            .to_string()
            + ".so";
        if !lib.join(versioned).is_file() {
            bail!(
                "{} is missing after installing the wheels",
                lib.join(versioned).display()
            );
        }
        let link = lib.join(&unversioned);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(versioned, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    link_cudnn(&dir, &lib)?;
    // Written after the wheels and before the stubs: a failed stub build
    // is redone alone.
    std::fs::write(dir.join("wheels.txt"), WHEELS.join("\n"))?;
    for stub in STUBS {
        build_stub(&root, stub, &cargo)?;
    }
    eprintln!("done. `cargo xtask cuda-build` builds the rpg binary with --features cuda.");
    Ok(())
}

/// The cuDNN wheel installs beside the CUDA libraries (`nvidia/cudnn/lib`);
/// links in CUDA_ROOT's `lib` let the build link `-lcudnn` and the binary
/// load `libcudnn.so.9` with the same LD_LIBRARY_PATH as the rest.
fn link_cudnn(dir: &Path, lib: &Path) -> Result<()> {
    let cudnn = dir.join("nvidia/cudnn/lib/libcudnn.so.9");
    if !cudnn.is_file() {
        bail!("{} is missing after installing the wheels", cudnn.display());
    }
    for name in ["libcudnn.so.9", "libcudnn.so"] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&cudnn, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// A link stub: a shared library with a library's SONAME and every entry
/// point cudarc declares for it, each returning an error. Only linked
/// against, never loaded where the real library is installed.
#[derive(Debug)]
struct Stub {
    /// What the linker's `-l` finds, in `lib/stubs`.
    file: &'static str,
    /// The real library's SONAME, which the binary will ask for.
    soname: &'static str,
    /// cudarc's bindings declaring the entry points, under its `src/`.
    bindings: &'static str,
    /// The entry points' common prefix.
    prefix: &'static str,
    /// What every stub entry point returns.
    error: i32,
    what: &'static str,
}

/// The NVIDIA driver (no wheel: it belongs to the driver install), and
/// NCCL (its wheel is 305 MB; linking needs only the names).
const STUBS: &[Stub] = &[
    Stub {
        file: "libcuda.so",
        soname: "libcuda.so.1",
        bindings: "driver/sys/mod.rs",
        prefix: "cu",
        error: 34, // CUDA_ERROR_STUB_LIBRARY
        what: "the NVIDIA driver library",
    },
    Stub {
        file: "libnccl.so",
        soname: "libnccl.so.2",
        bindings: "nccl/sys/mod.rs",
        prefix: "nccl",
        error: 2, // ncclSystemError
        what: "NCCL",
    },
];

/// Compiles `lib/stubs/<stub.file>` with one function per entry point
/// declared in cudarc's bindings.
fn build_stub(root: &Path, stub: &Stub, cargo: impl Fn() -> Command) -> Result<()> {
    let bindings = cudarc_source(stub.bindings, cargo)?;
    let text = std::fs::read_to_string(&bindings)
        .with_context(|| format!("reading {}", bindings.display()))?;
    let names = entry_points(&text, stub.prefix);
    if names.len() < 20 {
        bail!(
            "found only {} {} functions in {}; cudarc's layout changed",
            names.len(),
            stub.what,
            bindings.display()
        );
    }
    let mut source = format!(
        "/* Link stub for {}, generated by cargo xtask cuda-toolchain.\n \
         * Never loaded where the library is installed; every entry point returns {}. */\n",
        stub.what, stub.error
    );
    for name in &names {
        writeln!(source, "int {name}(void) {{ return {}; }}", stub.error)?;
    }
    let stubs = root.join("lib/stubs");
    std::fs::create_dir_all(&stubs)?;
    let c_file = stubs.join(format!("{}.c", stub.file.trim_end_matches(".so")));
    std::fs::write(&c_file, source)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC"])
        .arg(format!("-Wl,-soname,{}", stub.soname))
        .arg("-o")
        .arg(stubs.join(stub.file))
        .arg(&c_file)
        .status()
        .with_context(|| format!("running the C compiler `{cc}` (set CC)"))?;
    if !status.success() {
        bail!("compiling the {} link stub failed ({status})", stub.file);
    }
    eprintln!("{} link stub: {} entry points", stub.file, names.len());
    Ok(())
}

/// The functions starting with `prefix` declared in cudarc's bindings: the
/// `fn name(` lines of its `extern "C"` blocks, sorted, without duplicates.
fn entry_points<'a>(bindings: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = bindings
        .lines()
        .filter_map(|l| l.trim().strip_prefix("fn "))
        .filter(|rest| rest.starts_with(prefix))
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A file of cudarc's sources in the cargo registry (fetched if needed),
/// at the version Cargo.lock pins.
fn cudarc_source(file: &str, cargo: impl Fn() -> Command) -> Result<PathBuf> {
    let project = super::project_root();
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).context("reading Cargo.lock")?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"cudarc\""))
        .and_then(|p| {
            p.lines()
                .find_map(|l| l.trim().strip_prefix("version = \""))
        })
        .map(|v| v.trim_end_matches('"').to_string())
        .context("cudarc is not in Cargo.lock")?;
    let find = || -> Option<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        std::fs::read_dir(home.join("registry/src"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(format!("cudarc-{version}/src/{file}")))
            .find(|p| p.is_file())
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    let status = cargo()
        .args(["fetch"])
        .status()
        .context("running cargo fetch")?;
    if !status.success() {
        bail!("cargo fetch failed ({status})");
    }
    find().with_context(|| format!("cudarc {version} sources not found after cargo fetch"))
}

/// Points a command at the project toolchain (nvcc on PATH, CUDA_ROOT, and
/// the runtime libraries on LD_LIBRARY_PATH), unless CUDA_ROOT is already
/// set by the user.
pub fn apply_env(cmd: &mut Command, project: &Path) {
    if std::env::var_os("CUDA_ROOT").is_some() || !is_installed(project) {
        return;
    }
    let root = cuda_root(project);
    let prepend = |var: &str, dir: PathBuf| {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os(var) {
            paths.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(paths).unwrap_or_default()
    };
    if std::env::var_os("CUDA_COMPUTE_CAP").is_none() {
        // No GPU to ask at build time: default to the H100/H200 (sm_90)
        // this project is lent; set CUDA_COMPUTE_CAP for other cards.
        cmd.env("CUDA_COMPUTE_CAP", DEFAULT_COMPUTE_CAP);
    }
    cmd.env("PATH", prepend("PATH", root.join("bin")))
        .env("CUDA_ROOT", &root)
        .env(
            "LD_LIBRARY_PATH",
            prepend("LD_LIBRARY_PATH", root.join("lib")),
        );
}

/// Whether `nvcc` can be run (from the project toolchain or the system).
pub fn nvcc_available(project: &Path) -> bool {
    let mut cmd = Command::new("nvcc");
    cmd.arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    apply_env(&mut cmd, project);
    cmd.status().is_ok_and(|s| s.success())
}

/// Whether the NVIDIA driver library can be found by the dynamic loader.
pub fn driver_available() -> bool {
    let in_cache = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so.1"));
    let in_path = std::env::var_os("LD_LIBRARY_PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| p.join("libcuda.so.1").exists())
    });
    in_cache || in_path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_come_from_extern_declarations_only() {
        let bindings = "
pub unsafe fn cuInit(Flags: ::core::ffi::c_uint) -> CUresult {
        extern \"C\" {
            fn cuInit(Flags: ::core::ffi::c_uint) -> CUresult;
        }
        extern \"C\" {
            fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult;
            fn cuInit(Flags: ::core::ffi::c_uint) -> CUresult;
            fn not_driver(x: i32);
        }
";
        assert_eq!(entry_points(bindings, "cu"), ["cuInit", "cuMemAlloc_v2"]);
    }
}
