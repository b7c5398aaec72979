//! Backup names (pure): `<monitor>-<UTC time>.tar.gz`, such as `lab-20270101T120000Z.tar.gz`.
//! The time is fixed-width, so names sort by time; only names of this form are ever listed,
//! chosen or deleted, so nothing else in a bucket or a volume is touched.

use jiff::Timestamp;

/// What every backup name ends with.
pub const SUFFIX: &str = ".tar.gz";
/// `20270101T120000Z`: the time part of a name.
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const TIME_LEN: usize = 16;

/// The name of a backup of `monitor` taken at `at`.
pub fn backup_name(monitor: &str, at: Timestamp) -> String {
    format!("{monitor}-{}{SUFFIX}", at.strftime(TIME_FORMAT))
}

/// Whether `name` is a backup of `monitor` (and not of `monitor-2`, whose names share the prefix).
pub fn is_backup_of(monitor: &str, name: &str) -> bool {
    let Some(time) = name
        .strip_prefix(monitor)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let bytes = time.as_bytes();
    bytes.len() == TIME_LEN
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

/// The backups of `monitor` among `names`, oldest first.
pub fn backups_of<'a>(monitor: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| is_backup_of(monitor, n))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Of `sorted` backups (oldest first), those to delete so that the newest `keep` remain.
pub fn beyond_keep(sorted: &[String], keep: usize) -> &[String] {
    &sorted[..sorted.len().saturating_sub(keep)]
}

/// Which backup a restore asks for: the newest, or one by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Latest,
    Named(String),
}

impl Wanted {
    pub fn parse(s: &str) -> Self {
        match s {
            "latest" => Self::Latest,
            name => Self::Named(name.to_owned()),
        }
    }

    /// The backup this asks for among `sorted` (oldest first), if it is there. A name may be
    /// given without its `.tar.gz`.
    pub fn pick<'a>(&self, sorted: &'a [String]) -> Option<&'a String> {
        match self {
            Self::Latest => sorted.last(),
            Self::Named(name) => sorted
                .iter()
                .find(|n| *n == name || n.strip_suffix(SUFFIX) == Some(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn a_name_carries_the_monitor_and_the_utc_time() {
        assert_eq!(
            backup_name("lab", at("2027-01-02T03:04:05.678Z")),
            "lab-20270102T030405Z.tar.gz"
        );
    }

    #[test]
    fn only_names_of_the_form_belong_to_the_monitor() {
        assert!(is_backup_of("lab", "lab-20270102T030405Z.tar.gz"));
        for other in [
            "lab-2-20270102T030405Z.tar.gz",
            "lab-20270102T030405Z.tar",
            "lab-2027010T030405Z.tar.gz",
            "lab-20270102X030405Z.tar.gz",
            "lab20270102T030405Z.tar.gz",
            "notes.txt",
            "",
        ] {
            assert!(!is_backup_of("lab", other), "{other}");
        }
        assert!(is_backup_of("lab-2", "lab-2-20270102T030405Z.tar.gz"));
    }

    #[test]
    fn backups_sort_by_time_and_the_oldest_go_beyond_keep() {
        let names = [
            "lab-20270103T000000Z.tar.gz",
            "lab-20270101T000000Z.tar.gz",
            "other-20270101T000000Z.tar.gz",
            "lab-20270102T000000Z.tar.gz",
        ];
        let sorted = backups_of("lab", names);
        assert_eq!(
            sorted,
            [
                "lab-20270101T000000Z.tar.gz",
                "lab-20270102T000000Z.tar.gz",
                "lab-20270103T000000Z.tar.gz"
            ]
        );
        assert_eq!(beyond_keep(&sorted, 2), &sorted[..1]);
        assert!(beyond_keep(&sorted, 3).is_empty());
        assert!(beyond_keep(&sorted, 10).is_empty());
        assert_eq!(beyond_keep(&sorted, 0).len(), 3);
    }

    #[test]
    fn a_restore_picks_the_newest_or_the_named_backup() {
        let sorted = backups_of(
            "lab",
            ["lab-20270101T000000Z.tar.gz", "lab-20270102T000000Z.tar.gz"],
        );
        assert_eq!(
            Wanted::parse("latest").pick(&sorted),
            Some(&sorted[1]),
            "the newest"
        );
        assert_eq!(
            Wanted::parse("lab-20270101T000000Z").pick(&sorted),
            Some(&sorted[0])
        );
        assert_eq!(
            Wanted::parse("lab-20270101T000000Z.tar.gz").pick(&sorted),
            Some(&sorted[0])
        );
        assert_eq!(Wanted::parse("lab-20200101T000000Z").pick(&sorted), None);
        assert_eq!(Wanted::Latest.pick(&[]), None);
    }
}
