//! Reading one TOML table: the `Section` wrapper around toml-span's `TableHelper`, which turns
//! its errors into messages naming the key and what it accepts, and the value types it reads.

use super::*;

/// One TOML table being read. Its problems are kept without the component name, which is
/// added in [`Section::finish`] (a pipeline's name is only known once `name` was read).
pub(super) struct Section<'de> {
    pub(super) helper: TableHelper<'de>,
    /// The table's span: missing keys are reported at the table (its `[header]`).
    pub(super) span: Span,
    /// Prefix of key names in messages, e.g. `model.`.
    pub(super) path: &'static str,
    pub(super) problems: Vec<(Span, String)>,
}

impl<'de> Section<'de> {
    /// Opens `value` as a table; on failure returns the TOML type found instead.
    pub(super) fn open(value: &mut Value<'de>, path: &'static str) -> Result<Self, &'static str> {
        let span = value.span;
        if value.as_table().is_none() {
            return Err(value.as_ref().type_str());
        }
        let helper = TableHelper::new(value).map_err(|_| "table")?;
        Ok(Self {
            helper,
            span,
            path,
            problems: Vec::new(),
        })
    }

    /// Records a problem about this table's content.
    pub(super) fn error(&mut self, span: Span, message: String) {
        self.problems.push((span, message));
    }

    /// Moves the errors toml-span recorded for `key` since `before` into `problems`.
    pub(super) fn drain(&mut self, before: usize, key: &str) {
        let new: Vec<_> = self.helper.errors.drain(before..).collect();
        for error in new {
            let converted = convert(error, self.path, key);
            self.problems.extend(converted);
        }
    }

    /// An optional key; a value of the wrong type is recorded and read as absent.
    pub(super) fn get<T: Deserialize<'de>>(&mut self, key: &'static str) -> Option<Spanned<T>> {
        let before = self.helper.errors.len();
        let value = self.helper.optional_s(key);
        self.drain(before, key);
        value
    }

    /// A required key; a missing key is recorded at the table.
    pub(super) fn require<T: Deserialize<'de>>(&mut self, key: &'static str) -> Option<Spanned<T>> {
        let before = self.helper.errors.len();
        let value = self.helper.required_s(key).ok();
        self.drain(before, key);
        value
    }

    /// Takes a key's raw value (for tables and arrays read by hand).
    pub(super) fn take(&mut self, key: &'static str) -> Option<(Key<'de>, Value<'de>)> {
        self.helper.take(key)
    }

    /// Opens the sub-table `key`, recording a problem if it is something else.
    pub(super) fn table(&mut self, key: &'static str, path: &'static str) -> Option<Section<'de>> {
        let (_, mut value) = self.take(key)?;
        match Section::open(&mut value, path) {
            Ok(section) => Some(section),
            Err(found) => {
                let message = format!("{}{key} must be a table (got {})", self.path, a(found));
                self.error(value.span, message);
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        self.get(key)
    }

    pub(super) fn bool(&mut self, key: &'static str) -> Option<bool> {
        self.get::<bool>(key).map(|v| v.value)
    }

    /// An integer in `range`.
    pub(super) fn int(
        &mut self,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Option<Spanned<i64>> {
        let value = self.get::<i64>(key)?;
        if range.contains(&value.value) {
            return Some(value);
        }
        let accepted = crate::model::param::int_words(*range.start(), *range.end());
        let message = format!(
            "{}{key} must be {accepted} (got {})",
            self.path, value.value
        );
        self.error(value.span, message);
        None
    }

    /// An integer in `range`, converted to the field's type. The conversion only fails
    /// where `usize` is 32 bits (armv7 gateways) and the value is beyond it.
    pub(super) fn int_as<T: TryFrom<i64>>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let value = self.int(key, range)?;
        match T::try_from(value.value) {
            Ok(converted) => Some(converted),
            Err(_) => {
                let message = format!(
                    "{}{key} is too large for this platform (got {})",
                    self.path, value.value
                );
                self.error(value.span, message);
                None
            }
        }
    }

    /// An integer within a model parameter's [`IntRange`](crate::model::param::IntRange),
    /// converted to the field's type (see [`Section::int_as`]).
    pub(super) fn int_range<T: TryFrom<i64>>(
        &mut self,
        range: &crate::model::param::IntRange,
    ) -> Option<T> {
        self.int_as(range.key, range.min..=range.max)
    }

    /// A number (integer or float) for which `accepts` holds; `accepted` says which.
    pub(super) fn number(
        &mut self,
        key: &'static str,
        accepts: impl Fn(f64) -> bool,
        accepted: &str,
    ) -> Option<f64> {
        self.number_s(key, accepts, accepted).map(|v| v.value)
    }

    /// A number within a model parameter's [`Range`](crate::model::param::Range): the key,
    /// the test and the words of the message are the model's.
    pub(super) fn range(&mut self, range: &crate::model::param::Range) -> Option<Spanned<f64>> {
        self.number_s(range.key, |v| range.accepts(v), range.expected)
    }

    /// [`Section::range`], or `default` when the key is absent or its value is reported.
    pub(super) fn range_or(&mut self, range: &crate::model::param::Range, default: f64) -> f64 {
        self.range(range).map_or(default, |v| v.value)
    }

    /// [`Section::number`] with the value's span.
    pub(super) fn number_s(
        &mut self,
        key: &'static str,
        accepts: impl Fn(f64) -> bool,
        accepted: &str,
    ) -> Option<Spanned<f64>> {
        let value = self.get::<Number>(key)?;
        if accepts(value.value.0) {
            return Some(Spanned::with_span(value.value.0, value.span));
        }
        let message = format!(
            "{}{key} must be {accepted} (got {})",
            self.path, value.value.0
        );
        self.error(value.span, message);
        None
    }

    /// A size in bytes of at least `min`: an integer, or a string such as `"192MiB"` or
    /// `"1.5GB"` (units as the `bytesize` crate reads them: KB = 1000, KiB = 1024).
    pub(super) fn byte_size(&mut self, key: &'static str, min: u64) -> Option<u64> {
        let value = self.get::<ByteSizeValue>(key)?;
        if value.value.0 >= min {
            return Some(value.value.0);
        }
        let message = format!(
            "{}{key} must be at least {} (got {})",
            self.path,
            bytesize::ByteSize(min).display().iec(),
            bytesize::ByteSize(value.value.0).display().iec()
        );
        self.error(value.span, message);
        None
    }

    /// A duration string of at least `min` (at most [`MAX_DURATION`]).
    pub(super) fn duration(
        &mut self,
        key: &'static str,
        min: Duration,
    ) -> Option<Spanned<Duration>> {
        self.duration_within(key, min, MAX_DURATION)
    }

    pub(super) fn duration_within(
        &mut self,
        key: &'static str,
        min: Duration,
        max: Duration,
    ) -> Option<Spanned<Duration>> {
        let value = self.get::<DurationValue>(key)?;
        let duration = value.value.0;
        let problem = if duration < min {
            if min == POSITIVE {
                Some("greater than 0".to_owned())
            } else {
                Some(format!("at least {}", humantime::format_duration(min)))
            }
        } else if duration > max {
            Some(format!("at most {}", humantime::format_duration(max)))
        } else {
            None
        };
        match problem {
            None => Some(Spanned::with_span(duration, value.span)),
            Some(accepted) => {
                let message = format!(
                    "{}{key} must be {accepted} (got {})",
                    self.path,
                    humantime::format_duration(duration)
                );
                self.error(value.span, message);
                None
            }
        }
    }

    /// Reports keys nobody asked for (typos must not be silently ignored) and hands every
    /// problem of this table to `problems`, prefixed with `component`.
    pub(super) fn finish(mut self, component: &str, problems: &mut Problems<'_>) {
        if let Err(error) = self.helper.finalize(None) {
            for error in error.errors {
                self.problems.extend(convert(error, self.path, ""));
            }
        }
        for (span, message) in self.problems {
            problems.at(span, prefixed(component, message));
        }
    }

    /// Like [`Section::finish`] for a table nested in `parent` (an array item): hands its
    /// problems, unknown keys included, to `parent`, which names the component.
    pub(super) fn report_into(mut self, parent: &mut Section<'_>) {
        if let Err(error) = self.helper.finalize(None) {
            for error in error.errors {
                self.problems.extend(convert(error, self.path, ""));
            }
        }
        parent.problems.extend(self.problems);
    }

    /// Like [`Section::finish`] without the unknown-key check: used when the accepted keys
    /// depend on a value that is itself wrong (an unsupported model `kind`).
    pub(super) fn abandon(self, component: &str, problems: &mut Problems<'_>) {
        for (span, message) in self.problems {
            problems.at(span, prefixed(component, message));
        }
    }
}

pub(super) fn prefixed(component: &str, message: String) -> String {
    if component.is_empty() {
        message
    } else {
        format!("{component}: {message}")
    }
}

/// Turns a toml-span error about `key` into messages that name the key and what it accepts.
pub(super) fn convert(error: toml_span::Error, path: &str, key: &str) -> Vec<(Span, String)> {
    let described = error.to_string();
    let message = match error.kind {
        ErrorKind::Wanted { expected, found } => {
            format!(
                "{path}{key} must be {} (got {})",
                wanted(expected),
                a(found)
            )
        }
        // Our own `Deserialize` impls word their messages to follow the key: either
        // "must be …" or an index such as "[2] must be …".
        ErrorKind::Custom(text) if text.starts_with('[') => format!("{path}{key}{text}"),
        ErrorKind::Custom(text) => format!("{path}{key} {text}"),
        ErrorKind::MissingField(name) => format!("missing required key \"{path}{name}\""),
        ErrorKind::UnexpectedKeys { keys, expected } => {
            let accepted = expected.join(", ");
            return keys
                .into_iter()
                .map(|(name, span)| {
                    let message =
                        format!("unknown key \"{path}{name}\" (accepted keys: {accepted})");
                    (span, message)
                })
                .collect();
        }
        _ => format!("{path}{key}: {described}"),
    };
    vec![(error.span, message)]
}

/// toml-span names integer targets by Rust type (`i64`); users think "an integer".
pub(super) fn wanted(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "isize" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            "an integer"
        }
        "a bool" => "true or false",
        other => other,
    }
}

/// A TOML type name with its article: "an integer", "a string".
pub(super) fn a(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// A number written as a TOML integer or float (`rate = 50` and `rate = 50.0` both work).
pub(super) struct Number(pub(super) f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        match value.take() {
            ValueInner::Float(float) => Ok(Number(float)),
            // Precision loss above 2^53 is irrelevant for the settings read as numbers.
            ValueInner::Integer(integer) => Ok(Number(integer as f64)),
            other => Err(expected("a number", other, value.span).into()),
        }
    }
}

/// A duration written as a humantime string: `"500ms"`, `"30s"`, `"10m"`, `"1h 30m"`.
pub(super) struct DurationValue(pub(super) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::String(text) => match humantime::parse_duration(&text) {
                Ok(duration) => Ok(DurationValue(duration)),
                Err(error) => Err(custom(
                    span,
                    format!(
                        "must be a duration such as \"500ms\", \"30s\" or \"10m\" (got \"{text}\": {error})"
                    ),
                )),
            },
            other => Err(expected("a duration string such as \"30s\"", other, span).into()),
        }
    }
}

/// A size in bytes: an integer, or a string with a unit (`"192MiB"`, `"512 MB"`).
pub(super) struct ByteSizeValue(pub(super) u64);

impl<'de> Deserialize<'de> for ByteSizeValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Integer(n) => u64::try_from(n).map(ByteSizeValue).map_err(|_| {
                custom(span, format!("must be a size in bytes, not negative (got {n})"))
            }),
            ValueInner::String(text) => match text.trim().parse::<bytesize::ByteSize>() {
                Ok(size) => Ok(ByteSizeValue(size.as_u64())),
                Err(error) => Err(custom(
                    span,
                    format!(
                        "must be a size such as \"192MiB\", \"512MB\" or a number of bytes (got \"{text}\": {error})"
                    ),
                )),
            },
            other => Err(expected("a size such as \"192MiB\" or a number of bytes", other, span).into()),
        }
    }
}

/// `clean_session = true | false | "auto"`: `None` for `"auto"`.
pub(super) struct CleanSessionValue(pub(super) Option<bool>);

impl<'de> Deserialize<'de> for CleanSessionValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Boolean(clean) => Ok(CleanSessionValue(Some(clean))),
            ValueInner::String(text) if text == "auto" => Ok(CleanSessionValue(None)),
            ValueInner::String(text) => Err(custom(
                span,
                format!("must be true, false or \"auto\" (got \"{text}\")"),
            )),
            other => Err(expected("true, false or \"auto\"", other, span).into()),
        }
    }
}

/// An array of strings, each with its span, so that a bad entry is reported where it is.
pub(super) struct StringList(pub(super) Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Array(items) => {
                let mut strings = Vec::with_capacity(items.len());
                let mut errors = Vec::new();
                for (index, mut item) in items.into_iter().enumerate() {
                    let item_span = item.span;
                    match item.take() {
                        ValueInner::String(text) => {
                            strings.push(Spanned::with_span(text.into_owned(), item_span));
                        }
                        other => errors.push(custom_error(
                            item_span,
                            format!("[{index}] must be a string (got {})", a(other.type_str())),
                        )),
                    }
                }
                if errors.is_empty() {
                    Ok(StringList(strings))
                } else {
                    Err(DeserError { errors })
                }
            }
            other => Err(expected("an array of strings", other, span).into()),
        }
    }
}

pub(super) fn custom_error(span: Span, message: String) -> toml_span::Error {
    toml_span::Error {
        kind: ErrorKind::Custom(message.into()),
        span,
        line_info: None,
    }
}

pub(super) fn custom(span: Span, message: String) -> DeserError {
    custom_error(span, message).into()
}

/// Parse the top-level table `[name]` with `parse`, if present, reporting its leftover keys as
/// component `[name]`.
pub(super) fn optional_table<'de, T>(
    top: &mut Section<'de>,
    name: &'static str,
    problems: &mut Problems<'_>,
    parse: impl FnOnce(&mut Section<'de>) -> T,
) -> Option<T> {
    let mut section = top.table(name, "")?;
    let value = parse(&mut section);
    section.finish(&format!("[{name}]"), problems);
    Some(value)
}
