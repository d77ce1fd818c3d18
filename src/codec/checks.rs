//! The checks a decoded reading passes before it is handed on: its key, its time, its fields
//! (absent optional ones, labels, event weights, bounds), each failure a counted drop reason.

use super::*;

impl Decoder {
    /// Whether field `i` may be absent (the regression target, a label or a weight).
    pub(super) fn is_optional(&self, i: usize) -> bool {
        matches!(
            self.plan(i),
            Some(RolePlan::Optional | RolePlan::Label | RolePlan::Weight)
        )
    }

    /// The value of field `i` when a SenML reading lacks it: `NaN` if it is optional, else the
    /// error (`bad_event` for an item, `missing_field` with `problem` for anything else).
    pub(super) fn absent(&self, i: usize, problem: Problem) -> Result<f64, DecodeError> {
        match self.plan(i) {
            _ if self.is_optional(i) => Ok(f64::NAN),
            Some(RolePlan::Item) => Err(self.bad_event(i, EventProblem::MissingItem)),
            _ => Err(self.field_error(i, DropReason::MissingField, problem)),
        }
    }

    pub(super) fn field_error(
        &self,
        i: usize,
        reason: DropReason,
        problem: Problem,
    ) -> DecodeError {
        let field = &self.fields[i];
        DecodeError::new(
            reason,
            Location::Field {
                name: field.name.clone(),
                pointer: field.pointer.clone(),
            },
            problem,
        )
    }

    pub(super) fn key_needs_senml(&self, format: &'static str) -> DecodeError {
        let location = match self.key {
            KeyPlan::BaseName => Location::BaseName,
            _ => Location::RecordName,
        };
        DecodeError::new(
            DropReason::MissingKey,
            location,
            Problem::KeyNeedsSenml { format },
        )
    }

    /// Key, time and fields of one reading, as a walk (or a CSV line) found them; sets
    /// `out.time_ms`.
    pub(super) fn finish(&self, outcome: Outcome, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        self.check_key(outcome.key_slot)?;
        out.time_ms = self.check_time(outcome.time_slot)?;
        self.check_fields(&out.values, outcome.field_problem)
    }

    /// The problem of a pointer the format does not resolve.
    pub(super) fn unresolved_pointer(&self) -> Problem {
        match self.format {
            Format::Csv(_) => Problem::NoColumn,
            Format::Json | Format::Number | Format::Senml(_) => Problem::InvalidPointer,
        }
    }

    pub(super) fn check_key(&self, slot: KeySlot) -> Result<(), DecodeError> {
        let (pointer, valid) = match &self.key {
            KeyPlan::Pointer { pointer, valid } => (pointer, *valid),
            KeyPlan::RecordName | KeyPlan::BaseName => {
                let format = match self.format {
                    Format::Csv(_) => "csv",
                    _ => "json",
                };
                return Err(self.key_needs_senml(format));
            }
            KeyPlan::Topic | KeyPlan::TopicLevel(_) => return Ok(()),
        };
        let problem = match slot {
            KeySlot::Found => return Ok(()),
            KeySlot::Missing if !valid => self.unresolved_pointer(),
            KeySlot::Missing => Problem::Missing,
            KeySlot::Empty => Problem::EmptyKey,
            KeySlot::Wrong(found) => Problem::WrongType {
                expected: EXPECTED_KEY,
                found,
            },
        };
        Err(DecodeError::new(
            DropReason::MissingKey,
            Location::PayloadKey {
                pointer: pointer.clone(),
            },
            problem,
        ))
    }

    pub(super) fn check_time(&self, slot: TimeSlot) -> Result<Option<i64>, DecodeError> {
        let Some(time) = &self.time else {
            return Ok(None);
        };
        let problem = match slot {
            TimeSlot::Millis(ms) => return Ok(Some(ms)),
            TimeSlot::Missing if !time.valid => self.unresolved_pointer(),
            TimeSlot::Missing => Problem::Missing,
            TimeSlot::Wrong(found) => Problem::WrongType {
                expected: expected_time(time.unit),
                found,
            },
            TimeSlot::NonFinite => Problem::NonFinite,
            TimeSlot::OutOfRange => Problem::TimeOutOfRange,
            TimeSlot::NotRfc3339(e) => Problem::NotRfc3339(e),
            TimeSlot::Text(found) => Problem::TimeText {
                expected: expected_time(time.unit),
                found,
            },
        };
        Err(DecodeError::new(
            DropReason::BadTime,
            Location::Time {
                pointer: time.pointer.clone(),
            },
            problem,
        ))
    }

    pub(super) fn check_fields(
        &self,
        values: &[f64],
        problem: Option<(usize, FieldProblem)>,
    ) -> Result<(), DecodeError> {
        for (i, (field, value)) in self.fields.iter().zip(values).enumerate() {
            let (reason, problem) = match problem {
                Some((index, problem)) if index == i => match problem {
                    FieldProblem::Wrong(found) => (
                        DropReason::NotANumber,
                        Problem::WrongType {
                            expected: EXPECTED_NUMBER,
                            found,
                        },
                    ),
                    FieldProblem::NonFinite => (DropReason::NonFinite, Problem::NonFinite),
                    FieldProblem::BadLabel(problem) => return Err(self.bad_label(i, problem)),
                    FieldProblem::BadEvent(problem) => return Err(self.bad_event(i, problem)),
                    FieldProblem::NotANumberText(text) => {
                        (DropReason::NotANumber, Problem::NotANumberText(text))
                    }
                    FieldProblem::NonFiniteText(text) => {
                        (DropReason::NonFinite, Problem::NonFiniteText(text))
                    }
                },
                _ if value.is_nan() && !field.pointer_valid => {
                    (DropReason::MissingField, self.unresolved_pointer())
                }
                // The optional target and a label may be absent (predict only), and so may a
                // weight (weight 1).
                _ if value.is_nan() && self.is_optional(i) => continue,
                _ if value.is_nan() && self.plan(i) == Some(RolePlan::Item) => {
                    return Err(self.bad_event(i, EventProblem::MissingItem));
                }
                _ if value.is_nan() => (DropReason::MissingField, Problem::Missing),
                _ => continue,
            };
            return Err(self.field_error(i, reason, problem));
        }
        Ok(())
    }

    /// The `bad_label` error of field `index` (the label field).
    pub(super) fn bad_label(&self, index: usize, problem: LabelProblem) -> DecodeError {
        let problem = match problem {
            LabelProblem::Wrong(found) => Problem::WrongType {
                expected: EXPECTED_LABEL,
                found,
            },
            LabelProblem::Unknown(text) => Problem::UnknownLabel {
                text,
                labels: self.labels.clone(),
            },
            LabelProblem::SenmlValue(label) => Problem::SenmlWrongValue {
                expected: EXPECTED_LABEL,
                label,
            },
        };
        self.field_error(index, DropReason::BadLabel, problem)
    }

    /// The `bad_event` error of field `index` (a recommend event's item or weight).
    pub(super) fn bad_event(&self, index: usize, problem: EventProblem) -> DecodeError {
        let problem = Problem::BadEvent {
            problem,
            weights: self.event_weights.clone(),
        };
        self.field_error(index, DropReason::BadEvent, problem)
    }
}
