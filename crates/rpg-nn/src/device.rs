//! Choosing a device by name, with errors that say which feature to enable.

use candle_core::{Device, Result, bail};

/// Parses `cpu`, `cuda`, `cuda:N` or `metal` (also `metal:N`).
///
/// A device the build lacks is an error naming the cargo feature to enable;
/// a device the machine lacks is an error from the driver, not a panic.
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((kind, n)) => match n.parse::<usize>() {
            Ok(n) => (kind, n),
            Err(_) => bail!(
                "invalid device `{name}`: the ordinal after `:` must be a number, e.g. cuda:0"
            ),
        },
        None => (name, 0),
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cuda" => cuda(ordinal, name),
        "metal" => metal(ordinal, name),
        _ => bail!("unknown device `{name}`: expected cpu, cuda, cuda:N or metal"),
    }
}

/// Device memory in use on `device`, all of it as the driver reports it
/// (other processes' included), or `None` where this build cannot tell (the
/// CPU, Metal, a build without `cuda`).
pub fn device_memory_used(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(total.saturating_sub(free) as u64)
        }
        _ => None,
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize, name: &str) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        candle_core::Error::Msg(format!(
            "cannot open CUDA device `{name}` (is an NVIDIA GPU and driver present?): {e}"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize, name: &str) -> Result<Device> {
    bail!(
        "device `{name}` needs CUDA support, which this build lacks: rebuild with `--features cuda`"
    )
}

#[cfg(feature = "metal")]
fn metal(ordinal: usize, name: &str) -> Result<Device> {
    Device::new_metal(ordinal)
        .map_err(|e| candle_core::Error::Msg(format!("cannot open Metal device `{name}`: {e}")))
}

#[cfg(not(feature = "metal"))]
fn metal(_ordinal: usize, name: &str) -> Result<Device> {
    bail!(
        "device `{name}` needs Metal support, which this build lacks: rebuild with `--features metal`"
    )
}

/// A short name for a device (`cpu`, `cuda:0`, `metal:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_unknown_devices_are_errors() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        let err = parse_device("cuda:x").unwrap_err().to_string();
        assert!(err.contains("must be a number"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_it() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
