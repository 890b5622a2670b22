//! Importing a school's pupils from CSV: a header with `display_name` and optionally
//! `external_ref`; bad rows are reported by line and reason (never echoing their
//! content), good rows are kept.

use std::collections::HashSet;

use kepu_sync_core::ids::{PupilId, SchoolId};
use serde::Serialize;

use crate::accounts::{Accounts, Role};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::NewUser;

/// Rows written per transaction.
const CHUNK: usize = 500;
/// Longest accepted display name or reference, in characters.
const MAX_CHARS: usize = 100;

/// A good row.
#[derive(Clone, PartialEq, Eq)]
pub struct PupilRow {
    /// Its line in the file (1 is the header).
    pub line: u64,
    /// The name the school chose. Personal data.
    pub display_name: String,
    /// The school's own reference. Personal data.
    pub external_ref: Option<String>,
}

impl std::fmt::Debug for PupilRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PupilRow")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// A bad row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Its line in the file.
    pub line: u64,
    /// Why it was not imported.
    pub reason: String,
}

/// One imported pupil.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedPupil {
    /// The line it came from.
    pub line: u64,
    /// The new pseudonymous pupil id.
    pub pupil_id: PupilId,
}

/// The outcome of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// How many pupils were created.
    pub imported: usize,
    /// The rows that were not.
    pub errors: Vec<RowError>,
    /// The created pupils, by line.
    pub pupils: Vec<ImportedPupil>,
}

fn clean(value: &str, what: &str) -> std::result::Result<Option<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_CHARS {
        return Err(format!("{what} is longer than {MAX_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(Some(value.to_owned()))
}

/// The csv crate does not count skipped blank lines; this counts newlines before each
/// record's first byte instead, so reported lines match what an editor shows. Records
/// come in order, so counting is incremental.
struct LineCounter<'a> {
    input: &'a [u8],
    counted_to: usize,
    line: u64,
}

impl LineCounter<'_> {
    fn line_at(&mut self, position: &csv::Position) -> u64 {
        let mut end =
            usize::try_from(position.byte()).map_or(self.input.len(), |b| b.min(self.input.len()));
        // A record's position can point at the blank lines skipped before it.
        while self
            .input
            .get(end)
            .is_some_and(|b| matches!(b, b'\n' | b'\r'))
        {
            end += 1;
        }
        if end > self.counted_to {
            let newlines = self.input[self.counted_to..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.line += newlines as u64;
            self.counted_to = end;
        }
        self.line
    }
}

/// Reads a pupils CSV. A missing `display_name` column fails the whole file; every other
/// problem is a [`RowError`] for its line.
///
/// # Errors
/// [`Error::InvalidInput`] if the header is unreadable or lacks `display_name`.
pub fn parse_pupils_csv(input: &[u8]) -> Result<(Vec<PupilRow>, Vec<RowError>)> {
    let mut lines = LineCounter {
        input,
        counted_to: 0,
        line: 1,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .byte_headers()
        .map_err(|_| Error::InvalidInput("line 1: unreadable CSV header".into()))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| {
            std::str::from_utf8(h).is_ok_and(|h| {
                h.trim_start_matches('\u{feff}')
                    .trim()
                    .eq_ignore_ascii_case(name)
            })
        })
    };
    let name_col = column("display_name").ok_or_else(|| {
        Error::InvalidInput("line 1: the header has no display_name column".into())
    })?;
    let ref_col = column("external_ref");

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen_refs = HashSet::new();
    let mut record = csv::ByteRecord::new();
    let mut last_line = 1;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(err) => {
                let line = err.position().map_or(last_line + 1, |p| lines.line_at(p));
                errors.push(RowError {
                    line,
                    reason: "unreadable CSV row".into(),
                });
                // A syntax error cannot be skipped reliably; an I/O error ends the file.
                if !matches!(err.kind(), csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
                continue;
            }
        }
        let line = record
            .position()
            .map_or(last_line + 1, |p| lines.line_at(p));
        last_line = line;
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // blank line
        }
        let field = |i: usize| -> std::result::Result<&str, String> {
            std::str::from_utf8(record.get(i).unwrap_or_default())
                .map_err(|_| "not valid UTF-8".to_owned())
        };
        let parsed = (|| {
            let name = clean(field(name_col)?, "display_name")?
                .ok_or_else(|| "display_name is empty".to_owned())?;
            let external_ref = match ref_col {
                Some(col) => clean(field(col)?, "external_ref")?,
                None => None,
            };
            if let Some(r) = &external_ref
                && !seen_refs.insert(r.clone())
            {
                return Err("external_ref repeats an earlier row".to_owned());
            }
            Ok((name, external_ref))
        })();
        match parsed {
            Ok((display_name, external_ref)) => rows.push(PupilRow {
                line,
                display_name,
                external_ref,
            }),
            Err(reason) => errors.push(RowError { line, reason }),
        }
    }
    Ok((rows, errors))
}

impl Accounts {
    /// Creates the good rows' pupils at a school, in transactions of a few hundred rows,
    /// calling `progress(rows_done)` after each; reports bad rows by line.
    ///
    /// # Errors
    /// Unknown school, an unusable header, or a database failure (pupils of transactions
    /// already committed stay).
    pub async fn import_pupils(
        &self,
        school_id: SchoolId,
        rows: Vec<PupilRow>,
        errors: Vec<RowError>,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport> {
        self.store.require("schools", "school", school_id.0).await?;
        let mut pupils = Vec::with_capacity(rows.len());
        let mut done = 0u64;
        for chunk in rows.chunks(CHUNK) {
            let users: Vec<NewUser> = chunk
                .iter()
                .map(|row| NewUser {
                    id: crate::ids::new_id(),
                    role: Role::Pupil,
                    school_id: Some(school_id.0),
                    venue_id: None,
                    display_name: Some(row.display_name.clone()),
                    external_ref: row.external_ref.clone(),
                })
                .collect();
            self.store.create_users(&users, now_ms()).await?;
            pupils.extend(chunk.iter().zip(&users).map(|(row, user)| ImportedPupil {
                line: row.line,
                pupil_id: PupilId(user.id),
            }));
            done += chunk.len() as u64;
            progress(done);
        }
        tracing::info!(school = %school_id, imported = pupils.len(), rejected = errors.len(), "pupils imported");
        Ok(ImportReport {
            imported: pupils.len(),
            errors,
            pupils,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_reported_by_line_and_good_rows_kept() {
        let csv = "display_name,external_ref\n张小明,A1\n,A2\n李华,A1\n\n王芳,\n";
        let (rows, errors) = parse_pupils_csv(csv.as_bytes()).unwrap();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 6]);
        assert_eq!(
            errors,
            vec![
                RowError {
                    line: 3,
                    reason: "display_name is empty".into()
                },
                RowError {
                    line: 4,
                    reason: "external_ref repeats an earlier row".into()
                },
            ]
        );
    }

    #[test]
    fn header_without_display_name_is_refused() {
        assert!(parse_pupils_csv(b"name\nx\n").is_err());
    }

    #[test]
    fn invalid_utf8_row_is_reported_without_its_content() {
        let mut csv = b"display_name\n".to_vec();
        csv.extend_from_slice(b"\xff\xfe\n");
        csv.extend_from_slice("赵六\n".as_bytes());
        let (rows, errors) = parse_pupils_csv(&csv).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
    }
}
