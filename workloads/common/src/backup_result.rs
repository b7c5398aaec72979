//! The wire format of `iot-backup`'s result: one JSON object, written to the container's
//! termination message (`/dev/termination-log`) by iot-backup and read back by the operator from
//! the pod's status. One type on both sides, so the two cannot drift. The kubelet keeps at most
//! 4096 bytes of a termination message: [`BackupResult::to_line`] stays below that.

use serde::{Deserialize, Serialize};

/// The kubelet keeps this much of a termination message.
pub const MAX_LINE_BYTES: usize = 4096;

/// What one run of `iot-backup` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum BackupResult {
    /// `store`: a backup was packed and stored; older ones beyond `keep` were deleted.
    #[serde(rename_all = "camelCase")]
    Stored {
        /// The backup's name (the object or file name, such as `lab-20270101T120000Z.tar.gz`).
        name: String,
        /// Its size in bytes, as stored.
        size: u64,
        /// When it was taken, RFC 3339.
        time: String,
        /// Backups deleted because more than `keep` were stored.
        deleted: Vec<String>,
        /// The backups now stored, oldest first (at most [`MAX_LISTED`]: the newest).
        kept: Vec<String>,
    },
    /// `fetch`: a backup was fetched and unpacked for a restore.
    #[serde(rename_all = "camelCase")]
    Fetched { name: String, size: u64 },
    /// The run failed: what went wrong, and what to change.
    #[serde(rename_all = "camelCase")]
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fix: Option<String>,
    },
}

/// The most kept backup names a result lists (the newest), and of deleted ones: with names of
/// at most 64 characters (a monitor's name has at most 40) they stay below the 4096 bytes of a
/// termination message.
pub const MAX_LISTED: usize = 30;
const MAX_DELETED_LISTED: usize = 10;

/// Longest error or fix text kept in a result.
const MAX_TEXT: usize = 1200;

impl BackupResult {
    /// The JSON line, cut to fit a termination message (long texts shortened, lists capped).
    pub fn to_line(&self) -> String {
        let mut fitted = self.clone();
        match &mut fitted {
            Self::Stored { kept, deleted, .. } => {
                let skip = kept.len().saturating_sub(MAX_LISTED);
                kept.drain(..skip);
                deleted.truncate(MAX_DELETED_LISTED);
            }
            Self::Fetched { .. } => {}
            Self::Failed { error, fix } => {
                shorten(error);
                if let Some(fix) = fix {
                    shorten(fix);
                }
            }
        }
        // A plain enum of strings and numbers: serialising it cannot fail.
        serde_json::to_string(&fitted).unwrap_or_default()
    }

    /// The result in a termination message, if it holds one (a container that died before
    /// writing it leaves its log's tail there instead).
    pub fn parse(message: &str) -> Option<Self> {
        let line = message
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))?;
        serde_json::from_str(line.trim()).ok()
    }
}

fn shorten(text: &mut String) {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_through_its_line() {
        let stored = BackupResult::Stored {
            name: "lab-20270101T120000Z.tar.gz".into(),
            size: 1234,
            time: "2027-01-01T12:00:00Z".into(),
            deleted: vec!["lab-20261231T120000Z.tar.gz".into()],
            kept: vec!["lab-20270101T120000Z.tar.gz".into()],
        };
        assert_eq!(BackupResult::parse(&stored.to_line()), Some(stored.clone()));
        let line = stored.to_line();
        assert!(line.contains(r#""result":"stored""#), "{line}");
    }

    #[test]
    fn the_line_fits_a_termination_message_whatever_it_carries() {
        let many: Vec<String> = (0..500).map(|i| format!("{:0>64}", i)).collect();
        let stored = BackupResult::Stored {
            name: "x".into(),
            size: 1,
            time: "t".into(),
            deleted: many.clone(),
            kept: many.clone(),
        };
        let line = stored.to_line();
        assert!(line.len() < MAX_LINE_BYTES, "{} bytes", line.len());
        // The newest are kept.
        assert!(line.contains(&many[499]));
        let failed = BackupResult::Failed {
            error: "é".repeat(5000),
            fix: Some("f".repeat(5000)),
        };
        assert!(failed.to_line().len() < MAX_LINE_BYTES);
    }

    #[test]
    fn a_log_tail_is_no_result() {
        assert_eq!(BackupResult::parse("error: connection refused\n"), None);
        let line = BackupResult::Failed {
            error: "e".into(),
            fix: None,
        }
        .to_line();
        assert!(BackupResult::parse(&format!("some log\n{line}\n")).is_some());
    }
}
