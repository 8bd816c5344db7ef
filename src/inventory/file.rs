//! The file inventory: one JSON document `{"nodes": [...], "ports": [...], "portgroups": [...]}`
//! with each list exactly as Ironic returns it, so a dump of a real Ironic is a valid file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::ironic::model::Inventory;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("cannot read inventory file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid inventory file {path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid inventory file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub(crate) fn load(path: &Path) -> Result<Inventory, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

pub(crate) fn parse(path: &Path, text: &str) -> Result<Inventory, FileError> {
    let inventory: Inventory = serde_json::from_str(text).map_err(|e| {
        // serde_json appends " at line L column C" to its message; we state it once.
        let full = e.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map(|(m, _)| m.to_string())
            .unwrap_or(full);
        FileError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    validate(&inventory).map_err(|message| FileError::Invalid {
        path: path.to_owned(),
        message,
    })?;
    Ok(inventory)
}

fn validate(inv: &Inventory) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, n) in inv.nodes.iter().enumerate() {
        if n.uuid.trim().is_empty() {
            return Err(format!("nodes[{i}]: field uuid is empty"));
        }
        if !seen.insert(n.uuid.as_str()) {
            return Err(format!("nodes[{i}]: duplicate node uuid {}", n.uuid));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let err = parse(Path::new("inv.json"), "{\"nodes\": [\n  {\"uuid\": 1}\n]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid inventory file inv.json: line 2, column 12: invalid type: integer `1`, expected a string"
        );
    }

    #[test]
    fn duplicate_uuid_is_rejected() {
        let err = parse(
            Path::new("i.json"),
            r#"{"nodes": [{"uuid": "a"}, {"uuid": "a"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid inventory file i.json: nodes[1]: duplicate node uuid a"
        );
    }

    #[test]
    fn ports_and_portgroups_are_optional() {
        let inv = parse(Path::new("i.json"), r#"{"nodes": []}"#).unwrap();
        assert!(inv.ports.is_empty() && inv.portgroups.is_empty());
    }
}
