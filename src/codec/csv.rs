//! CSV payloads (RFC 4180): one reading per line.
//!
//! A line is read as an object whose members are the configured columns, so the pointers of
//! fields, key and time are `"/column"`, as for JSON; each pointer is resolved to its column
//! once, when the decoder is built ([`CsvPlan`]). A payload is read in one pass, line by line,
//! straight from its bytes: a cell is a slice of the payload (quoted cells are unescaped only
//! when a key or a label needs their text), so decoding allocates nothing once the
//! [`ReadingBuf`](super::ReadingBuf) is warm.
//!
//! Syntax, as RFC 4180 with the leniency senders need: lines end in LF or CRLF; a cell may be
//! quoted (`"a, b"`, with `""` for a quote, and line breaks inside); ASCII blanks around a cell
//! (around its quotes, for a quoted one) are not part of it; an unquoted cell is taken as is,
//! quotes included. Lines that are empty or blank are skipped.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

use super::error::LabelText;
use super::event::{check_item, weight_from_number, weight_from_text, EventWeights};
use super::json::{
    time_from_number, time_from_rfc3339, FieldProblem, FieldRole, KeySlot, LabelProblem, Number,
    Outcome, TimeSlot,
};
use super::label::{LabelNumber, LabelSet};
use super::pointer::{parse_pointer, Target};
use super::shown::Snippet;
use crate::config::{CsvConfig, TimeUnit};

/// The columns of a `format = "csv"` pipeline and what each one feeds.
#[derive(Debug)]
pub(crate) struct CsvPlan {
    delimiter: u8,
    header: bool,
    columns: Box<[Box<str>]>,
    /// The targets of each column, in column order.
    targets: Box<[Vec<Target>]>,
}

impl CsvPlan {
    pub(crate) fn new(config: &CsvConfig) -> Self {
        Self {
            delimiter: config.delimiter,
            header: config.header,
            columns: config.columns.iter().map(|c| c.as_str().into()).collect(),
            targets: config.columns.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Makes the column `pointer` names (`"/name"`, one RFC 6901 token) lead to `target`.
    /// Returns `false`, adding nothing, when it names no column.
    pub(crate) fn insert(&mut self, pointer: &str, target: Target) -> bool {
        let Ok(tokens) = parse_pointer(pointer) else {
            return false;
        };
        let [token] = tokens.as_slice() else {
            return false;
        };
        match self.columns.iter().position(|column| **column == **token) {
            Some(index) => {
                self.targets[index].push(target);
                true
            }
            None => false,
        }
    }
}

/// A problem with the syntax of a line, which makes it `bad_csv`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineProblem {
    /// A quoted cell runs to the end of the payload.
    UnterminatedQuote,
    /// Cell `n` (1-based) has text after its closing quote.
    TextAfterQuote(usize),
    /// `found` cells where there are `expected` columns.
    ColumnCount { expected: usize, found: usize },
}

/// One line of a payload, read.
pub(crate) struct Line {
    /// Its number in the payload (1-based; where it starts, for a line spanning several).
    pub number: usize,
    /// What its cells gave, when its syntax is right.
    pub outcome: Result<Outcome, LineProblem>,
}

/// Reads the lines of one payload, one per [`Lines::next_line`].
pub(crate) struct Lines<'t, 'p> {
    plan: &'p CsvPlan,
    text: &'t str,
    pos: usize,
    /// The physical line `pos` is on.
    line: usize,
    /// Whether a non-blank line was read (a header is only looked for before).
    started: bool,
}

/// A cell of a line.
#[derive(Clone, Copy)]
struct Cell<'t> {
    /// An unquoted cell without its surrounding blanks, or what is between a quoted cell's
    /// quotes, with `""` still doubled when `escaped`.
    raw: &'t str,
    quoted: bool,
    escaped: bool,
}

impl<'t> Cell<'t> {
    /// The cell's text, unescaped (allocates only when it has `""`).
    fn text(self) -> Cow<'t, str> {
        if self.escaped {
            Cow::Owned(self.raw.replace("\"\"", "\""))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// Appends the unescaped text to `out` (no allocation beyond `out`'s growth).
    fn push_to(self, out: &mut String) {
        if self.escaped {
            for (i, part) in self.raw.split("\"\"").enumerate() {
                if i > 0 {
                    out.push('"');
                }
                out.push_str(part);
            }
        } else {
            out.push_str(self.raw);
        }
    }

    /// Whether the unescaped text is `text`, without allocating.
    fn is(self, text: &str) -> bool {
        if !self.escaped {
            return self.raw == text;
        }
        let mut rest = text;
        for (i, part) in self.raw.split("\"\"").enumerate() {
            if i > 0 {
                match rest.strip_prefix('"') {
                    Some(after) => rest = after,
                    None => return false,
                }
            }
            match rest.strip_prefix(part) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

/// How a cell ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CellEnd {
    Delimiter,
    LineEnd,
    Eof,
}

/// A problem with one cell's syntax.
#[derive(Clone, Copy)]
enum CellProblem {
    Unterminated,
    TextAfterQuote,
}

impl<'t, 'p> Lines<'t, 'p> {
    pub(crate) fn new(plan: &'p CsvPlan, text: &'t str) -> Self {
        Self {
            plan,
            text,
            pos: 0,
            line: 1,
            started: false,
        }
    }

    /// Reads the next line that is not blank (nor a skipped header), writing its key into
    /// `key`, a recommend event's item into `text` and its fields into `values`, as `role(i)`
    /// says field `i` is read. `None` at the end of the payload.
    pub(crate) fn next_line(
        &mut self,
        out: LineOut<'_>,
        time_unit: TimeUnit,
        role: impl Fn(usize) -> Option<FieldRole<'p>>,
    ) -> Option<Line> {
        let LineOut { key, text, values } = out;
        let columns = self.plan.columns.len();
        while self.pos < self.text.len() {
            let number = self.line;
            // Whether this line may still be the header (only the first non-blank line can be).
            let mut header = self.plan.header && !self.started;
            let mut cells = 0;
            let mut first_blank = false;
            let mut problem = None;
            let mut row = Row {
                key_slot: KeySlot::Missing,
                time_slot: TimeSlot::Missing,
                field_problem: None,
            };
            values.fill(f64::NAN);
            text.clear();
            loop {
                let (cell, end) = self.next_cell();
                match cell {
                    Ok(cell) => {
                        if cells == 0 {
                            first_blank = !cell.quoted && cell.raw.is_empty();
                        }
                        if header {
                            header = self.plan.columns.get(cells).is_some_and(|c| cell.is(c));
                        }
                        if let Some(targets) = self.plan.targets.get(cells) {
                            for &target in targets {
                                let out = LineOut {
                                    key: &mut *key,
                                    text: &mut *text,
                                    values: &mut *values,
                                };
                                row.cell(target, cell, out, time_unit, &role);
                            }
                        }
                    }
                    Err(CellProblem::Unterminated) => {
                        header = false;
                        problem.get_or_insert(LineProblem::UnterminatedQuote);
                    }
                    Err(CellProblem::TextAfterQuote) => {
                        header = false;
                        problem.get_or_insert(LineProblem::TextAfterQuote(cells + 1));
                    }
                }
                cells += 1;
                if end != CellEnd::Delimiter {
                    break;
                }
            }
            if cells == 1 && first_blank && problem.is_none() {
                continue;
            }
            self.started = true;
            if header && cells == columns {
                continue;
            }
            let outcome = match problem {
                Some(problem) => Err(problem),
                None if cells != columns => Err(LineProblem::ColumnCount {
                    expected: columns,
                    found: cells,
                }),
                None => Ok(Outcome {
                    key_slot: row.key_slot,
                    time_slot: row.time_slot,
                    field_problem: row.field_problem,
                }),
            };
            return Some(Line { number, outcome });
        }
        None
    }

    /// Reads one cell from `pos` and moves past it and its delimiter or line end.
    fn next_cell(&mut self) -> (Result<Cell<'t>, CellProblem>, CellEnd) {
        let bytes = self.text.as_bytes();
        let delimiter = self.plan.delimiter;
        let blank = |b: u8| b != delimiter && matches!(b, b' ' | b'\t' | b'\r');
        let mut start = self.pos;
        while bytes.get(start).is_some_and(|&b| blank(b)) {
            start += 1;
        }
        if bytes.get(start) != Some(&b'"') {
            // Unquoted: up to the delimiter or the end of the line.
            let (end, how) = match memchr2(delimiter, b'\n', &bytes[start..]) {
                Some(i) if bytes[start + i] == delimiter => (start + i, CellEnd::Delimiter),
                Some(i) => (start + i, CellEnd::LineEnd),
                None => (bytes.len(), CellEnd::Eof),
            };
            self.advance(end, how);
            // Delimiter and LF are ASCII, so `end` is on a character boundary.
            let raw = self.text.get(start..end).unwrap_or("").trim_ascii();
            let cell = Cell {
                raw,
                quoted: false,
                escaped: false,
            };
            return (Ok(cell), how);
        }
        let inner = start + 1;
        let mut from = inner;
        let mut escaped = false;
        let close = loop {
            match memchr(b'"', &bytes[from..]) {
                None => {
                    self.line += bytes[inner..].iter().filter(|&&b| b == b'\n').count();
                    self.pos = bytes.len();
                    return (Err(CellProblem::Unterminated), CellEnd::Eof);
                }
                Some(i) if bytes.get(from + i + 1) == Some(&b'"') => {
                    escaped = true;
                    from += i + 2;
                }
                Some(i) => break from + i,
            }
        };
        self.line += bytes[inner..close].iter().filter(|&&b| b == b'\n').count();
        let cell = Cell {
            raw: self.text.get(inner..close).unwrap_or(""),
            quoted: true,
            escaped,
        };
        let mut after = close + 1;
        while bytes.get(after).is_some_and(|&b| blank(b)) {
            after += 1;
        }
        match bytes.get(after) {
            None => {
                self.advance(after, CellEnd::Eof);
                (Ok(cell), CellEnd::Eof)
            }
            Some(&b) if b == delimiter => {
                self.advance(after, CellEnd::Delimiter);
                (Ok(cell), CellEnd::Delimiter)
            }
            Some(b'\n') => {
                self.advance(after, CellEnd::LineEnd);
                (Ok(cell), CellEnd::LineEnd)
            }
            Some(_) => {
                // Resynchronise at the next delimiter or line end.
                let (end, how) = match memchr2(delimiter, b'\n', &bytes[after..]) {
                    Some(i) if bytes[after + i] == delimiter => (after + i, CellEnd::Delimiter),
                    Some(i) => (after + i, CellEnd::LineEnd),
                    None => (bytes.len(), CellEnd::Eof),
                };
                self.advance(end, how);
                (Err(CellProblem::TextAfterQuote), how)
            }
        }
    }

    /// Moves past the delimiter or line end at `end`.
    fn advance(&mut self, end: usize, how: CellEnd) {
        match how {
            CellEnd::Delimiter => self.pos = end + 1,
            CellEnd::LineEnd => {
                self.pos = end + 1;
                self.line += 1;
            }
            CellEnd::Eof => self.pos = self.text.len(),
        }
    }
}

/// Where a line's cells go: the key, a recommend event's item, and one value per field (each
/// reset to `NaN`, "missing", when the line starts).
pub(crate) struct LineOut<'o> {
    pub key: &'o mut String,
    pub text: &'o mut String,
    pub values: &'o mut [f64],
}

/// What the cells of one line gave so far.
struct Row {
    key_slot: KeySlot,
    time_slot: TimeSlot,
    field_problem: Option<(usize, FieldProblem)>,
}

impl Row {
    fn field_problem(&mut self, index: usize, problem: FieldProblem) {
        match self.field_problem {
            Some((first, _)) if first <= index => {}
            _ => self.field_problem = Some((index, problem)),
        }
    }

    fn cell<'p>(
        &mut self,
        target: Target,
        cell: Cell<'_>,
        out: LineOut<'_>,
        time_unit: TimeUnit,
        role: &impl Fn(usize) -> Option<FieldRole<'p>>,
    ) {
        let LineOut { key, text, values } = out;
        match target {
            Target::Field(i) => {
                // An empty cell leaves the field `NaN`: missing (or absent, for the optional
                // target, a label and a weight).
                let result = match role(i) {
                    _ if cell.raw.trim_ascii().is_empty() => return,
                    Some(FieldRole::Label(labels)) => label(labels, cell),
                    Some(FieldRole::Item) => item(cell, text),
                    Some(FieldRole::Weight(weights)) => weight(weights, cell),
                    Some(FieldRole::Optional) | None => number(cell),
                };
                match result {
                    Ok(value) => {
                        if let Some(slot) = values.get_mut(i) {
                            *slot = value;
                        }
                    }
                    Err(problem) => self.field_problem(i, problem),
                }
            }
            Target::Key => {
                key.clear();
                cell.push_to(key);
                self.key_slot = if key.is_empty() {
                    KeySlot::Empty
                } else {
                    KeySlot::Found
                };
            }
            Target::Time => self.time_slot = time(cell.raw.trim_ascii(), time_unit),
        }
    }
}

/// A cell read as a recommend event's item: its text (unescaped), 1 to 64 bytes, into `text`.
fn item(cell: Cell<'_>, text: &mut String) -> Result<f64, FieldProblem> {
    // Checked on the unescaped copy (an over-long item grows `text` once, then never again).
    text.clear();
    cell.push_to(text);
    check_item(text)
        .map(|()| 0.0)
        .map_err(FieldProblem::BadEvent)
}

/// A cell read as a recommend event's weight: a finite number (blanks around it ignored) in
/// (0, 1024], else an event type (the cell's text). A cell such as `inf` that is no event type
/// is a weight out of range.
fn weight(weights: &EventWeights, cell: Cell<'_>) -> Result<f64, FieldProblem> {
    let number = cell.raw.trim_ascii().parse::<f64>();
    let result = match number {
        Ok(number) if number.is_finite() => weight_from_number(number),
        _ => weight_from_text(weights, &cell.text())
            .or_else(|unknown| number.map_or(Err(unknown), weight_from_number)),
    };
    result.map_err(FieldProblem::BadEvent)
}

/// A cell read as a number: f64 syntax, blanks around it ignored.
fn number(cell: Cell<'_>) -> Result<f64, FieldProblem> {
    let text = cell.raw.trim_ascii();
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(FieldProblem::NonFiniteText(Snippet::new(text))),
        Err(_) => Err(FieldProblem::NotANumberText(Snippet::new(text))),
    }
}

/// A cell read as a label: its text matched against the lists; failing that, a number matched
/// by its shortest text (`1.0` is `1`), or `true`/`false`.
fn label(labels: &LabelSet, cell: Cell<'_>) -> Result<f64, FieldProblem> {
    let text = cell.text();
    if let Some(positive) = labels.classify(&text) {
        return Ok(f64::from(u8::from(positive)));
    }
    let trimmed = text.trim_ascii();
    if let Ok(value) = trimmed.parse::<f64>() {
        if value.is_finite() {
            return match labels.classify_number(LabelNumber::Float(value)) {
                Ok(positive) => Ok(f64::from(u8::from(positive))),
                Err(text) => Err(FieldProblem::BadLabel(LabelProblem::Unknown(
                    LabelText::Number(text),
                ))),
            };
        }
    }
    for (word, value) in [("true", 1.0), ("false", 0.0)] {
        if trimmed.eq_ignore_ascii_case(word) {
            return Ok(value);
        }
    }
    Err(FieldProblem::BadLabel(LabelProblem::Unknown(
        LabelText::String(Snippet::new(&text)),
    )))
}

/// A cell read as the event time under `unit`.
fn time(text: &str, unit: TimeUnit) -> TimeSlot {
    if text.is_empty() {
        return TimeSlot::Missing;
    }
    if unit == TimeUnit::Rfc3339 {
        return time_from_rfc3339(text);
    }
    let number = match text.parse::<i64>() {
        Ok(integer) => Some(Number::Signed(integer)),
        Err(_) => match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Some(Number::Float(float)),
            Ok(_) => return TimeSlot::NonFinite,
            Err(_) => None,
        },
    };
    match (number, unit) {
        (Some(number), _) => time_from_number(unit, number),
        (None, TimeUnit::Auto) => time_from_rfc3339(text),
        (None, _) => TimeSlot::Text(Snippet::new(text)),
    }
}
