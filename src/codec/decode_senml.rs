//! Decoding a SenML pack (RFC 8428) into readings, as the pipeline's SenML plan says: one
//! reading per record (key = the record name), or one per group of records sharing a base name.

use super::*;

impl Decoder {
    /// A SenML pack: resolved first, then turned into readings as the plan says.
    pub(super) fn decode_senml(
        &self,
        plan: &SenmlPlan,
        text: &str,
        now_ms: i64,
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        let pack = match senml::read_pack(text, now_ms) {
            Ok(Ok(pack)) => pack,
            Ok(Err((record, problem))) => {
                let e = DecodeError::new(DropReason::BadSenml, Location::Payload, problem);
                return on_error(match record {
                    Some(number) => e.at(Element::record(number)),
                    None => e,
                });
            }
            Err(e) => return on_error(json_syntax_error(e)),
        };
        out.values.resize(self.fields.len(), f64::NAN);
        match plan {
            SenmlPlan::PerRecord(values) => {
                for record in &pack.records {
                    match self.senml_record(&pack, record, values, out) {
                        Ok(()) => on_reading(out),
                        Err(e) => on_error(e.at(Element::record(record.number))),
                    }
                }
            }
            SenmlPlan::Grouped(names) => self.senml_groups(&pack, names, out, on_reading, on_error),
        }
    }

    /// One record as one reading (`key = "name"`).
    pub(super) fn senml_record(
        &self,
        pack: &Pack<'_>,
        record: &Record<'_>,
        values: &[Option<SenmlValue>],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        out.text.clear();
        match &self.key {
            KeyPlan::RecordName => {
                out.key.clear();
                out.key.push_str(pack.base_name(record));
                out.key.push_str(&record.name);
                if !senml::is_valid_name(&out.key) {
                    return Err(DecodeError::new(
                        DropReason::MissingKey,
                        Location::RecordName,
                        Problem::InvalidSenmlName(Snippet::new(&out.key)),
                    ));
                }
            }
            _ => self.senml_other_key()?,
        }
        out.time_ms = Some(record.time_ms.ok_or_else(senml_time_error)?);
        for (i, value) in values.iter().enumerate() {
            let Some(value) = *value else {
                return Err(self.field_error(i, DropReason::MissingField, Problem::NotSenmlValue));
            };
            let found = match (value, &record.value, record.sum) {
                (SenmlValue::V, RecordValue::Number(x), _) => Some(Seen::Number(*x)),
                (SenmlValue::Vb, RecordValue::Bool(b), _) => Some(Seen::Bool(*b)),
                (SenmlValue::Vs, RecordValue::String(s), _) => Some(Seen::Text(s)),
                (SenmlValue::S, _, Some(sum)) => Some(Seen::Number(sum)),
                _ => None,
            };
            out.values[i] = match found {
                Some(found) => self.senml_value(i, found, &mut out.text)?,
                None => self.absent(
                    i,
                    Problem::SenmlNoValue {
                        wanted: value.label(),
                        found: record.value.label(),
                    },
                )?,
            };
        }
        Ok(())
    }

    /// The records some field names, grouped by base name and time, each group one reading.
    pub(super) fn senml_groups(
        &self,
        pack: &Pack<'_>,
        names: &[Option<Box<str>>],
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        let named = |record: &Record<'_>| names.iter().flatten().any(|n| **n == *record.name);
        // The records read, in pack order; one whose time is out of range cannot be grouped.
        let mut members: SmallVec<[usize; 16]> = SmallVec::with_capacity(pack.records.len());
        for (index, record) in pack.records.iter().enumerate() {
            if !named(record) {
                continue;
            }
            if record.time_ms.is_none() {
                on_error(senml_time_error().at(Element::record(record.number)));
                continue;
            }
            members.push(index);
        }
        let same_group = |a: &Record<'_>, b: &Record<'_>| {
            pack.base_name(a)
                .cmp(pack.base_name(b))
                .then(a.time_ms.cmp(&b.time_ms))
        };
        // A stable sort keeps pack order inside each group, so a group's first member is its
        // first record.
        members.sort_by(|&a, &b| same_group(&pack.records[a], &pack.records[b]));
        let mut groups: SmallVec<[(usize, usize); 16]> = SmallVec::with_capacity(members.len());
        let mut start = 0;
        while let Some(&first) = members.get(start) {
            let end = members[start..]
                .iter()
                .position(|&m| same_group(&pack.records[first], &pack.records[m]).is_ne())
                .map_or(members.len(), |offset| start + offset);
            groups.push((start, end));
            start = end;
        }
        groups.sort_by_key(|&(start, _)| members[start]);
        for (start, end) in groups {
            let group = &members[start..end];
            let first = &pack.records[group[0]];
            match self.senml_group(pack, names, group, out) {
                Ok(()) => on_reading(out),
                Err(e) => on_error(e.at(Element::group(first.number))),
            }
        }
    }

    /// One group of records as one reading.
    pub(super) fn senml_group(
        &self,
        pack: &Pack<'_>,
        names: &[Option<Box<str>>],
        group: &[usize],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        let first = &pack.records[group[0]];
        out.text.clear();
        match &self.key {
            KeyPlan::BaseName => {
                let base = pack.base_name(first);
                out.key.clear();
                out.key.push_str(base);
                if !senml::is_valid_name(base) {
                    return Err(DecodeError::new(
                        DropReason::MissingKey,
                        Location::BaseName,
                        Problem::InvalidSenmlName(Snippet::new(base)),
                    ));
                }
            }
            _ => self.senml_other_key()?,
        }
        out.time_ms = first.time_ms;
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else {
                return Err(self.field_error(i, DropReason::MissingField, Problem::NotRecordName));
            };
            // The last record of that name counts.
            let record = group
                .iter()
                .rev()
                .map(|&r| &pack.records[r])
                .find(|r| *r.name == **name);
            let found = record.map(|record| match (&record.value, record.sum) {
                (RecordValue::Number(x), _) => Seen::Number(*x),
                (RecordValue::Bool(b), _) => Seen::Bool(*b),
                (RecordValue::String(s), _) => Seen::Text(s),
                (RecordValue::Data, _) => Seen::Data,
                (RecordValue::None, sum) => Seen::Number(sum.unwrap_or(f64::NAN)),
            });
            out.values[i] = match found {
                Some(found) => self.senml_value(i, found, &mut out.text)?,
                None => self.absent(i, Problem::Missing)?,
            };
        }
        Ok(())
    }

    /// A key that is neither the record name nor the base name: only a topic key works (it is
    /// already in `out.key`).
    pub(super) fn senml_other_key(&self) -> Result<(), DecodeError> {
        match &self.key {
            KeyPlan::Pointer { pointer, .. } => Err(DecodeError::new(
                DropReason::MissingKey,
                Location::PayloadKey {
                    pointer: pointer.clone(),
                },
                Problem::PointerNeedsJson { format: "senml" },
            )),
            KeyPlan::RecordName => Err(DecodeError::new(
                DropReason::MissingKey,
                Location::RecordName,
                Problem::NotGrouped,
            )),
            KeyPlan::Topic | KeyPlan::TopicLevel(_) | KeyPlan::BaseName => Ok(()),
        }
    }

    /// The value of field `i` from a SenML record, by the field's role (an item is written
    /// into `text`).
    pub(super) fn senml_value(
        &self,
        i: usize,
        found: Seen<'_>,
        text: &mut String,
    ) -> Result<f64, DecodeError> {
        let one_or_zero = |b: bool| f64::from(u8::from(b));
        let event = |result: Result<f64, EventProblem>| {
            result.map_err(|problem| self.bad_event(i, problem))
        };
        match (self.role(i), found) {
            // Not a combination the config allows (recommend events are JSON): read as JSON
            // would be, a number being an item only when it is an integer.
            (Some(FieldRole::Item), Seen::Text(s)) => event(item_from_text(s, text).map(|()| 0.0)),
            (Some(FieldRole::Item), Seen::Number(x)) => {
                event(item_from_float(x, text).map(|()| 0.0))
            }
            (Some(FieldRole::Item), Seen::Bool(_)) => {
                event(Err(EventProblem::ItemType(Found::Bool)))
            }
            (Some(FieldRole::Item), Seen::Data) => event(Err(EventProblem::ItemSenmlValue("vd"))),
            (Some(FieldRole::Weight(weights)), Seen::Text(s)) => {
                event(weight_from_text(weights, s))
            }
            (Some(FieldRole::Weight(_)), Seen::Number(x)) => event(weight_from_number(x)),
            (Some(FieldRole::Weight(_)), Seen::Bool(_)) => {
                event(Err(EventProblem::WeightType(Found::Bool)))
            }
            (Some(FieldRole::Weight(_)), Seen::Data) => {
                event(Err(EventProblem::WeightSenmlValue("vd")))
            }
            (_, Seen::Number(x)) if !x.is_finite() => {
                Err(self.field_error(i, DropReason::NonFinite, Problem::NonFinite))
            }
            (_, Seen::Bool(b)) => Ok(one_or_zero(b)),
            (Some(FieldRole::Label(labels)), Seen::Number(x)) => {
                match labels.classify_number(LabelNumber::Float(x)) {
                    Ok(positive) => Ok(one_or_zero(positive)),
                    Err(text) => {
                        Err(self.bad_label(i, LabelProblem::Unknown(LabelText::Number(text))))
                    }
                }
            }
            (Some(FieldRole::Label(labels)), Seen::Text(s)) => {
                match labels.classify(s) {
                    Some(positive) => Ok(one_or_zero(positive)),
                    None => Err(self
                        .bad_label(i, LabelProblem::Unknown(LabelText::String(Snippet::new(s))))),
                }
            }
            (Some(FieldRole::Label(_)), Seen::Data) => {
                Err(self.bad_label(i, LabelProblem::SenmlValue("vd")))
            }
            (_, Seen::Number(x)) => Ok(x),
            (_, Seen::Text(_)) => Err(self.field_error(
                i,
                DropReason::NotANumber,
                Problem::SenmlWrongValue {
                    expected: EXPECTED_NUMBER,
                    label: "vs",
                },
            )),
            (_, Seen::Data) => Err(self.field_error(
                i,
                DropReason::NotANumber,
                Problem::SenmlWrongValue {
                    expected: EXPECTED_NUMBER,
                    label: "vd",
                },
            )),
        }
    }
}
