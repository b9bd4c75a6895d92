//! The device manifest of a factory batch: which devices to make, read from a CSV file or
//! generated from `--count N --prefix P`.
//!
//! A provisioning line must never find out on device 4,817 that line 4,818 of its manifest is
//! wrong, so the manifest is validated whole before anything is done: every problem
//! (duplicate ids, invalid ids, unknown columns, bad booleans, ragged rows) is collected with
//! its line number and reported together. Validation streams the file and keeps only the ids
//! seen so far, so a 100,000-line manifest costs a few megabytes, not a copy of the file.
//! Duplicates are detected case-insensitively because DPS treats registration ids that way.

use crate::ids::{OrganizationId, RegistrationId};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The columns a manifest may have. `deviceId` is required; `csr` names the device's
/// certificate signing request file (a CSR batch, see [`super::csr`]).
pub const COLUMNS: [&str; 6] = [
    "deviceId",
    "displayName",
    "template",
    "organization",
    "simulated",
    "csr",
];

/// One device of a batch, as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The device id, which is also its DPS registration id and its certificate CN.
    pub device_id: RegistrationId,
    /// Display name in IoT Central.
    pub display_name: Option<String>,
    /// Device template (a DTMI).
    pub template: Option<String>,
    /// Organization the device belongs to.
    pub organization: Option<OrganizationId>,
    /// Whether IoT Central should simulate the device.
    pub simulated: Option<bool>,
    /// The `csr` cell: the device's CSR file, as written (relative paths are relative to the
    /// manifest's folder).
    pub csr: Option<std::path::PathBuf>,
    /// Line of the manifest (1 is the header); 0 for generated devices.
    pub line: u64,
}

impl DeviceSpec {
    /// A device with only an id (what `--count/--prefix` makes).
    pub fn bare(device_id: RegistrationId) -> DeviceSpec {
        DeviceSpec {
            device_id,
            display_name: None,
            template: None,
            organization: None,
            simulated: None,
            csr: None,
            line: 0,
        }
    }

    /// Whether the device must be created in IoT Central before it registers: only when the
    /// manifest gives it something DPS registration alone cannot set.
    pub fn needs_central_device(&self) -> bool {
        self.display_name.is_some()
            || self.template.is_some()
            || self.organization.is_some()
            || self.simulated.is_some()
    }
}

/// One thing wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line of the file (1 is the header row).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be opened or read.
    #[error("cannot read manifest {path}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest has problems; nothing was done.
    #[error("manifest {path} has {} problem(s), nothing was done:\n{}", problems.len(), ProblemList(problems))]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
    /// `--count/--prefix` would make invalid ids.
    #[error("--prefix {prefix:?} makes invalid device ids")]
    BadPrefix {
        /// The prefix.
        prefix: String,
        /// Why the generated id is invalid.
        #[source]
        source: crate::ids::InvalidId,
    },
    /// The manifest (or the count) has no device.
    #[error("the manifest has no device")]
    Empty,
}

/// Problems one per line, indented, for an error message.
pub(crate) struct ProblemList<'a, T>(pub(crate) &'a [T]);

impl<T: fmt::Display> fmt::Display for ProblemList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Where the devices of a batch come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A CSV manifest with a header row.
    Csv(PathBuf),
    /// These devices (for example one `--device ID`).
    Ids(Vec<RegistrationId>),
    /// `count` devices named `prefix` + a zero-padded number from 1.
    Generated {
        /// How many devices.
        count: u64,
        /// The id prefix.
        prefix: String,
    },
}

/// What validation learned about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Number of devices.
    pub devices: u64,
    /// Number of devices that need an IoT Central device created first.
    pub with_central_fields: u64,
    /// Number of devices whose row names a CSR file (the `csr` column).
    pub with_csr: u64,
}

impl Source {
    /// A short description, stored in the journal to recognise the batch on resume.
    pub fn describe(&self) -> String {
        match self {
            Source::Csv(p) => format!("manifest {}", p.display()),
            Source::Ids(ids) if ids.len() == 1 => format!("device {}", ids[0]),
            Source::Ids(ids) => format!("{} devices", ids.len()),
            Source::Generated { count, prefix } => format!("--count {count} --prefix {prefix}"),
        }
    }

    /// Validates the whole source and returns how many devices it holds, or every problem.
    pub fn validate(&self) -> Result<Summary, ManifestError> {
        let mut summary = Summary {
            devices: 0,
            with_central_fields: 0,
            with_csr: 0,
        };
        self.scan(true, |spec| {
            summary.devices += 1;
            if spec.needs_central_device() {
                summary.with_central_fields += 1;
            }
            if spec.csr.is_some() {
                summary.with_csr += 1;
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            ScanError::Manifest(e) => e,
            ScanError::Sink(never) => match never {},
        })?;
        if summary.devices == 0 {
            return Err(ManifestError::Empty);
        }
        Ok(summary)
    }

    /// Calls `sink` for each device in order. Call [`Source::validate`] first: this pass
    /// stops at the first problem it meets instead of collecting them.
    pub fn for_each<E>(
        &self,
        sink: impl FnMut(DeviceSpec) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        self.scan(false, sink)
    }

    fn scan<E>(
        &self,
        collect: bool,
        mut sink: impl FnMut(DeviceSpec) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        match self {
            Source::Generated { count, prefix } => {
                let width = count.to_string().len();
                for i in 1..=*count {
                    let id = format!("{prefix}{i:0width$}");
                    let id = RegistrationId::new(id).map_err(|source| {
                        ScanError::Manifest(ManifestError::BadPrefix {
                            prefix: prefix.clone(),
                            source,
                        })
                    })?;
                    sink(DeviceSpec::bare(id)).map_err(ScanError::Sink)?;
                }
                Ok(())
            }
            Source::Ids(ids) => {
                for id in ids {
                    sink(DeviceSpec::bare(id.clone())).map_err(ScanError::Sink)?;
                }
                Ok(())
            }
            Source::Csv(path) => scan_csv(path, collect, sink),
        }
    }
}

/// An error of [`Source::for_each`]: the manifest's, or the sink's.
#[derive(Debug)]
pub enum ScanError<E> {
    /// The manifest could not be read or is invalid.
    Manifest(ManifestError),
    /// The sink failed.
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for ScanError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Manifest(e) => e.fmt(f),
            ScanError::Sink(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ScanError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScanError::Manifest(e) => e.source(),
            ScanError::Sink(e) => e.source(),
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn scan_csv<E>(
    path: &Path,
    collect: bool,
    mut sink: impl FnMut(DeviceSpec) -> Result<(), E>,
) -> Result<(), ScanError<E>> {
    let read_err = |source: std::io::Error| {
        ScanError::Manifest(ManifestError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let mut problems: Vec<Problem> = Vec::new();
    let invalid = |problems: Vec<Problem>| {
        ScanError::Manifest(ManifestError::Invalid {
            path: path.to_owned(),
            problems,
        })
    };
    // Report the first problem at once when not collecting; otherwise keep going.
    macro_rules! problem {
        ($line:expr, $($arg:tt)*) => {{
            problems.push(Problem { line: $line, message: format!($($arg)*) });
            if !collect {
                return Err(invalid(problems));
            }
        }};
    }

    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(invalid(vec![Problem {
                line: 1,
                message: "the file is empty: a header row naming the columns is required \
                          (deviceId, displayName, template, organization, simulated, csr)"
                    .into(),
            }]))
        }
        Some(Err(e)) => return Err(invalid(vec![csv_problem(&e, 1)])),
        Some(Ok(h)) => h,
    };
    let mut index: [Option<usize>; 6] = [None; 6];
    for (i, name) in header.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| *c == name) {
            Some(k) if index[k].is_some() => problem!(1, "column {name:?} appears twice"),
            Some(k) => index[k] = Some(i),
            None => match COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(name)) {
                Some(c) => problem!(1, "unknown column {name:?} (did you mean {c:?}?)"),
                None => problem!(
                    1,
                    "unknown column {name:?} (allowed: {})",
                    COLUMNS.join(", ")
                ),
            },
        }
    }
    if index[0].is_none() {
        problem!(1, "the required column \"deviceId\" is missing");
    }
    let width = header.len();

    // The csv crate skips blank lines without counting them, so record lines are found by
    // a second sequential pass over the same bytes (constant memory).
    let mut lines = LineCounter::new(std::fs::File::open(path).map_err(read_err)?);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut rows = 0u64;
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = match e.position() {
                    Some(p) => lines.line_at(p.byte()).map_err(read_err)?,
                    None => 0,
                };
                problem!(line, "{}", csv_problem(&e, line).message);
                continue;
            }
        };
        let line = match record.position() {
            Some(p) => lines.line_at(p.byte()).map_err(read_err)?,
            None => 0,
        };
        if record.len() == 1 && record.get(0) == Some("") {
            continue; // a blank line
        }
        rows += 1;
        if record.len() != width {
            problem!(
                line,
                "{} field(s) where the header has {width}",
                record.len()
            );
            continue;
        }
        let cell = |k: usize| {
            index[k]
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let Some(raw_id) = index[0].map(|i| record.get(i).unwrap_or("").to_owned()) else {
            continue; // the missing column is already reported
        };
        let device_id = match RegistrationId::new(raw_id.clone()) {
            Ok(id) => {
                if let Some(first) = seen.insert(raw_id.to_ascii_lowercase(), line) {
                    problem!(
                        line,
                        "duplicate deviceId {raw_id:?} (first on line {first}; ids are case-insensitive)"
                    )
                }
                Some(id)
            }
            Err(e) => {
                problem!(line, "deviceId: {e}");
                None
            }
        };
        let organization = match cell(3).map(OrganizationId::new) {
            Some(Err(e)) => {
                problem!(line, "organization: {e}");
                None
            }
            Some(Ok(o)) => Some(o),
            None => None,
        };
        let simulated = match cell(4) {
            Some(v) => match parse_bool(&v) {
                Some(b) => Some(b),
                None => {
                    problem!(
                        line,
                        "simulated: {v:?} is not a boolean (true/false, yes/no, 1/0)"
                    );
                    None
                }
            },
            None => None,
        };
        if let (Some(device_id), true) = (device_id, problems.is_empty()) {
            let spec = DeviceSpec {
                device_id,
                display_name: cell(1),
                template: cell(2),
                organization,
                simulated,
                csr: cell(5).map(std::path::PathBuf::from),
                line,
            };
            sink(spec).map_err(ScanError::Sink)?;
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if rows == 0 && collect {
        return Err(ScanError::Manifest(ManifestError::Empty));
    }
    Ok(())
}

/// Finds the line a record starts on, given the byte offset where the reader began it.
struct LineCounter {
    reader: std::io::BufReader<std::fs::File>,
    offset: u64,
    line: u64,
}

impl LineCounter {
    fn new(file: std::fs::File) -> LineCounter {
        LineCounter {
            reader: std::io::BufReader::new(file),
            offset: 0,
            line: 1,
        }
    }

    /// Advances to `from` counting newlines, then past the blank lines the csv reader
    /// skipped, and returns the line of the first byte of the record.
    fn line_at(&mut self, from: u64) -> std::io::Result<u64> {
        use std::io::BufRead;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(self.line);
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                if self.offset >= from && b != b'\n' && b != b'\r' {
                    done = true;
                    break;
                }
                if b == b'\n' {
                    self.line += 1;
                }
                self.offset += 1;
                used += 1;
            }
            self.reader.consume(used);
            if done {
                return Ok(self.line);
            }
        }
    }
}

fn csv_problem(e: &csv::Error, line: u64) -> Problem {
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => format!("unreadable CSV: {e}"),
    };
    Problem { line, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn manifest(text: &str) -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, Source::Csv(path))
    }

    fn collect(source: &Source) -> Vec<DeviceSpec> {
        let mut out = Vec::new();
        source
            .for_each(|s| {
                out.push(s);
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        out
    }

    fn problems(source: &Source) -> Vec<Problem> {
        match source.validate() {
            Err(ManifestError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_good_manifest_reads_every_column() {
        let (_d, src) = manifest(
            "\u{feff}deviceId,displayName,template,organization,simulated\n\
             dev-1,Thermostat 1,dtmi:contoso:t;1,seattle,true\n\
             \n\
             dev-2,,,,\n\
             dev-3,\"Quoted, name\",,,No\n",
        );
        assert_eq!(
            src.validate().unwrap(),
            Summary {
                devices: 3,
                with_central_fields: 2,
                with_csr: 0
            }
        );
        let specs = collect(&src);
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].device_id.as_str(), "dev-1");
        assert_eq!(specs[0].display_name.as_deref(), Some("Thermostat 1"));
        assert_eq!(specs[0].template.as_deref(), Some("dtmi:contoso:t;1"));
        assert_eq!(specs[0].organization.as_ref().unwrap().as_str(), "seattle");
        assert_eq!(specs[0].simulated, Some(true));
        assert_eq!(specs[0].line, 2);
        assert!(!specs[1].needs_central_device());
        assert_eq!(specs[1].line, 4);
        assert_eq!(specs[2].display_name.as_deref(), Some("Quoted, name"));
        assert_eq!(specs[2].simulated, Some(false));
    }

    #[test]
    fn columns_may_come_in_any_order_and_only_device_id_is_required() {
        let (_d, src) = manifest("simulated,deviceId\nyes,a\n0,b\n");
        let specs = collect(&src);
        assert_eq!(specs[0].simulated, Some(true));
        assert_eq!(specs[1].device_id.as_str(), "b");
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let (_d, src) = manifest(
            "deviceId,displayname,color,simulated\n\
             dev-1,a,red,true\n\
             bad id,a,red,true\n\
             DEV-1,a,red,true\n\
             dev-4,a,red,maybe\n\
             dev-5,a\n",
        );
        let p = problems(&src);
        let lines: Vec<u64> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 1, 3, 4, 5, 6], "{p:#?}");
        assert!(p[0].message.contains("did you mean \"displayName\""));
        assert!(p[1].message.contains("unknown column \"color\""));
        assert!(p[2].message.contains("deviceId") && p[2].message.contains("bad id"));
        assert!(p[3].message.contains("duplicate") && p[3].message.contains("line 2"));
        assert!(p[4].message.contains("maybe"));
        assert!(p[5].message.contains("2 field(s)"));
    }

    #[test]
    fn nothing_reaches_the_sink_from_a_bad_manifest() {
        let (_d, src) = manifest("deviceId\nok-1\nbad/id\nok-2\n");
        let mut seen = 0;
        let r = src.for_each(|_| {
            seen += 1;
            Ok::<_, std::io::Error>(())
        });
        assert!(matches!(
            r,
            Err(ScanError::Manifest(ManifestError::Invalid { .. }))
        ));
        assert_eq!(seen, 1, "only rows before the first problem may be seen");
        // validate() is what callers run first: it sees all of them.
        assert_eq!(problems(&src).len(), 1);
    }

    #[test]
    fn line_numbers_survive_blank_lines_and_multi_line_fields() {
        let (_d, src) =
            manifest("deviceId,displayName\r\n\r\nok-1,\"two\nlines\"\r\n\n\nbad id,x\n");
        assert_eq!(problems(&src)[0].line, 7);
    }

    #[test]
    fn missing_header_column_and_empty_files() {
        let (_d, src) = manifest("displayName\nx\n");
        assert!(problems(&src)[0].message.contains("required column"));
        let (_d, src) = manifest("");
        assert_eq!(problems(&src)[0].line, 1);
        let (_d, src) = manifest("deviceId\n");
        assert!(matches!(src.validate(), Err(ManifestError::Empty)));
        let r = Source::Csv("/nonexistent/m.csv".into()).validate();
        assert!(matches!(r, Err(ManifestError::Read { .. })));
    }

    #[test]
    fn invalid_organization_is_a_problem() {
        let (_d, src) = manifest("deviceId,organization\nd1,Seattle\n");
        let p = problems(&src);
        assert_eq!(p[0].line, 2);
        assert!(p[0].message.starts_with("organization"));
    }

    #[test]
    fn the_error_message_lists_every_problem() {
        let (_d, src) = manifest("deviceId\na b\nc d\n");
        let text = src.validate().unwrap_err().to_string();
        assert!(text.contains("2 problem(s)"), "{text}");
        assert!(
            text.contains("line 2:") && text.contains("line 3:"),
            "{text}"
        );
    }

    #[test]
    fn generated_ids_are_zero_padded() {
        let src = Source::Generated {
            count: 100,
            prefix: "dev-".into(),
        };
        assert_eq!(src.validate().unwrap().devices, 100);
        let ids: Vec<String> = collect(&src)
            .into_iter()
            .map(|s| s.device_id.to_string())
            .collect();
        assert_eq!(ids[0], "dev-001");
        assert_eq!(ids[99], "dev-100");
        let bad = Source::Generated {
            count: 2,
            prefix: "bad prefix".into(),
        };
        assert!(matches!(
            bad.validate(),
            Err(ManifestError::BadPrefix { .. })
        ));
        let none = Source::Generated {
            count: 0,
            prefix: "d".into(),
        };
        assert!(matches!(none.validate(), Err(ManifestError::Empty)));
    }
}
