//! Result files (`summary.json`, reports, fits): written whole or not at
//! all, so an interrupted or failed write never leaves a truncated file
//! where a reader expects a result.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Writes `value` as pretty JSON to `path`: into a temporary file beside
/// it, then renamed over it.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_json_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_json(&path, &serde_json::json!({ "a": 1 })).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/x.json");
        assert!(matches!(write_json(&missing, &1), Err(Error::Io { .. })));
    }
}
