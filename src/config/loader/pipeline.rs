//! `[[pipelines]]`: each pipeline's topics, format, key, time, fields and output, and the
//! checks between pipelines (names, chains).

use super::*;

/// `[[pipelines]]`: at least one, names unique.
pub(super) fn pipelines(
    top: &mut Section<'_>,
    problems: &mut Problems<'_>,
) -> Option<Vec<PipelineConfig>> {
    const NONE: &str =
        "[[pipelines]]: at least one pipeline is required (add a [[pipelines]] table)";
    let Some((_, mut value)) = top.take("pipelines") else {
        problems.at(Span::new(0, 0), NONE.into());
        return None;
    };
    let span = value.span;
    let items = match value.take() {
        ValueInner::Array(items) => items,
        ValueInner::Table(_) => {
            problems.at(
                span,
                "pipelines must be an array of tables: write [[pipelines]], not [pipelines]".into(),
            );
            return None;
        }
        other => {
            problems.at(
                span,
                format!(
                    "pipelines must be an array of tables ([[pipelines]]) (got {})",
                    a(other.type_str())
                ),
            );
            return None;
        }
    };
    if items.is_empty() {
        problems.at(span, NONE.into());
        return None;
    }
    let mut pipelines = Vec::with_capacity(items.len());
    let mut complete = true;
    let mut names: HashMap<String, Span> = HashMap::new();
    // (pipeline, its `from`), checked once every name is known.
    let mut chains: Vec<(String, Spanned<String>)> = Vec::new();
    for (index, mut item) in items.into_iter().enumerate() {
        let section = match Section::open(&mut item, "") {
            Ok(section) => section,
            Err(found) => {
                problems.at(
                    item.span,
                    format!("pipelines[{index}] must be a table (got {})", a(found)),
                );
                complete = false;
                continue;
            }
        };
        let (pipeline, name, from) = pipeline(section, index, problems);
        if let (Some(name), Some(from)) = (&name, from) {
            chains.push((name.value.clone(), from));
        }
        if let Some(name) = name {
            if let Some(first) = names.get(&name.value) {
                let (line, _) = problems.lines.locate(first.start);
                let message = format!(
                    "pipeline \"{}\": name is already used by the pipeline at line {line} (pipeline names must be unique)",
                    name.value
                );
                problems.at(name.span, message);
            } else {
                names.insert(name.value, name.span);
            }
        }
        match pipeline {
            Some(pipeline) => pipelines.push(pipeline),
            None => complete = false,
        }
    }
    if !chain_problems(&chains, &names, problems) {
        complete = false;
    }
    complete.then_some(pipelines)
}

/// Checks every `from`: it names another pipeline, and following `from` never loops (a
/// reading would circulate for ever). Returns whether all are valid.
pub(super) fn chain_problems(
    chains: &[(String, Spanned<String>)],
    names: &HashMap<String, Span>,
    problems: &mut Problems<'_>,
) -> bool {
    let mut valid = true;
    let upstream = |name: &str| {
        chains
            .iter()
            .find(|(pipeline, _)| pipeline == name)
            .map(|(_, from)| from.value.as_str())
    };
    for (pipeline, from) in chains {
        let message = if !names.contains_key(&from.value) {
            let mut known: Vec<&str> = names.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!(
                "pipeline \"{pipeline}\": from = \"{}\" is not a pipeline of this file (pipelines: {})",
                from.value,
                known.join(", ")
            )
        } else if from.value == *pipeline {
            format!("pipeline \"{pipeline}\": from names the pipeline itself")
        } else {
            // Walk upstream; the chain is at most as long as the number of pipelines.
            let mut path = vec![pipeline.as_str(), from.value.as_str()];
            let mut current = from.value.as_str();
            let mut looped = false;
            while let Some(next) = upstream(current) {
                if next == pipeline {
                    path.push(next);
                    looped = true;
                    break;
                }
                if path.contains(&next) || path.len() > chains.len() + 1 {
                    break;
                }
                path.push(next);
                current = next;
            }
            if !looped {
                continue;
            }
            format!(
                "pipeline \"{pipeline}\": from makes a loop ({}): a reading would circulate for ever",
                path.join(" ← ")
            )
        };
        problems.at(from.span, message);
        valid = false;
    }
    valid
}

/// The span of the value of `key` in `s`, before it is read (`None`: not written).
/// The placeholders of a pipeline's `output`.
pub(super) const OUTPUT_PLACEHOLDERS: [Placeholder; 3] =
    [Placeholder::Pipeline, Placeholder::Key, Placeholder::Field];

/// The topic template of setting `key`, with placeholders from `allowed`; what is wrong with
/// it is reported at its span, naming it `label` (`None`: not written, or invalid).
pub(super) fn topic_template(
    s: &mut Section<'_>,
    key: &'static str,
    label: &str,
    allowed: &[Placeholder],
) -> Option<Spanned<TopicTemplate>> {
    let text = s.string(key)?;
    match TopicTemplate::parse(&text.value, allowed) {
        Ok(template) => Some(Spanned {
            value: template,
            span: text.span,
        }),
        Err(reason) => {
            let message = format!(
                "{label} \"{}\" is not a valid topic template: {reason}",
                text.value
            );
            s.error(text.span, message);
            None
        }
    }
}

pub(super) fn written_span(s: &Section<'_>, key: &str) -> Option<Span> {
    s.helper.table.get(key).map(|value| value.span)
}

/// The keys of the sub-table `key` of `s` as written, in file order, with their spans, before
/// it is read (empty when `key` is absent or not a table).
pub(super) fn written_keys(s: &Section<'_>, key: &str) -> Vec<Spanned<String>> {
    let mut keys: Vec<Spanned<String>> = s
        .helper
        .table
        .get(key)
        .and_then(|value| value.as_table())
        .map(|table| {
            table
                .keys()
                .map(|name| Spanned::with_span(name.name.to_string(), name.span))
                .collect()
        })
        .unwrap_or_default();
    keys.sort_by_key(|name| name.span.start);
    keys
}

/// One `[[pipelines]]` entry. Also returns its name (when valid) for the uniqueness check and
/// its `from` for the chaining checks.
pub(super) fn pipeline(
    mut s: Section<'_>,
    index: usize,
    problems: &mut Problems<'_>,
) -> (
    Option<PipelineConfig>,
    Option<Spanned<String>>,
    Option<Spanned<String>>,
) {
    let name = match s.require::<String>("name") {
        Some(name) if rules::is_valid_name(&name.value) => Some(name),
        Some(name) => {
            let message = format!(
                "name must match [A-Za-z0-9_-]+ (it is used in topics and state keys) (got \"{}\")",
                name.value
            );
            s.error(name.span, message);
            None
        }
        None => None,
    };
    // Messages name the pipeline the way the user wrote it when possible.
    let component = match &name {
        Some(name) => format!("pipeline \"{}\"", name.value),
        None => format!("pipeline #{}", index + 1),
    };

    let from = s.string("from");
    let topics = match &from {
        Some(from) => {
            if s.take("topics").is_some() {
                let message = format!(
                    "a pipeline reads either MQTT topics or another pipeline's output: remove topics, or from = \"{}\"",
                    from.value
                );
                s.error(from.span, message);
            }
            Some(Vec::new())
        }
        None => topics(&mut s),
    };
    // Read before `format` and `operators` take them: a recommend model rejects them there.
    let format_span = written_span(&s, "format");
    let format = format(&mut s);
    // A chained pipeline reads another pipeline's output messages, whose `key` and `time`
    // members are the natural defaults.
    let chained = from.is_some();
    let key = if chained && !s.helper.contains("key") {
        Some(KeySource::Pointer("/key".into()))
    } else {
        key(&mut s, topics.as_deref().unwrap_or(&[]), format.as_ref())
    };
    let time = if chained && !s.helper.contains("time") {
        Some(Some(TimeSource {
            pointer: "/time".into(),
            unit: TimeUnit::Milliseconds,
        }))
    } else {
        time(&mut s, format.as_ref())
    };
    let max_skew = max_skew(&mut s, time.as_ref(), format.as_ref());
    if let (Some(from), Some(format)) = (&from, &format) {
        if *format != PayloadFormat::Json {
            let message = format!(
                "from = \"{}\" reads JSON output messages: format must be \"json\"",
                from.value
            );
            s.error(from.span, message);
        }
    }
    let one_value = match (&format, &key) {
        (Some(PayloadFormat::Number), _) => Some(OneValue::Number),
        (Some(PayloadFormat::Senml), Some(KeySource::RecordName)) => Some(OneValue::SenmlRecord),
        _ => None,
    };
    let field_keys = written_keys(&s, "fields");
    let (fields, string_fields) = fields(&mut s, format.as_ref(), key.as_ref());
    let bounds = bounds::bounds(&mut s, fields.as_deref());
    let operators_span = written_span(&s, "operators");
    let (operators, model_fields) = operators::operators(&mut s, fields.as_deref());
    let output = topic_template(&mut s, "output", "output", &OUTPUT_PLACEHOLDERS);
    let output_qos = s.int_as("output_qos", 0..=1).unwrap_or(0);
    let max_payload_bytes = s
        .int_as("max_payload_bytes", 1..=i64::MAX)
        .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    let model_given = s.helper.contains("model");
    let (model, kind) = match s.table("model", "model.") {
        Some(section) => model(
            section,
            model_fields.as_deref(),
            one_value,
            topics.as_deref().unwrap_or(&[]),
            &component,
            problems,
        ),
        None => {
            // Present but not a table was already reported by `table`.
            if !model_given {
                let span = s.span;
                let message = format!(
                    "missing required key \"model\" (a [pipelines.model] table with kind = {})",
                    accepted_kinds()
                );
                s.error(span, message);
            }
            (None, None)
        }
    };
    if kind == Some(Kind::Recommend) {
        let recommend = match &model {
            Some(ModelConfig::Recommend(r)) => Some(r),
            _ => None,
        };
        let written = recommend::Written {
            format: format.as_ref().zip(format_span),
            operators: operators_span,
            field_keys: &field_keys,
        };
        recommend::pipeline_rules(&mut s, &written, recommend);
    }
    // With a season of n readings the detector learns two seasons before it flags: what is
    // normal for each phase is not known before.
    let longest_season = match &model {
        Some(ModelConfig::Forecast(f)) => f
            .params
            .seasons
            .as_slice()
            .iter()
            .filter_map(|spec| match spec {
                SeasonSpec::Steps(m) => Some(*m as u64),
                SeasonSpec::Duration { .. } => None,
            })
            .max(),
        _ => None,
    };
    let anomaly = s.table("anomaly", "anomaly.").map(|mut section| {
        let params = anomaly(&mut section, kind, longest_season);
        section.finish(&component, problems);
        params
    });
    // A SenML string value (`vs`) can only be a classification label.
    let label = match &model {
        Some(ModelConfig::Classification(c)) => Some(c.target.as_str()),
        _ => None,
    };
    // A label or a recommend item is not a measured number: bounds cannot say what is
    // plausible for it.
    let not_numeric = match &model {
        Some(ModelConfig::Classification(c)) => Some(("a classification label", c.target.as_str())),
        Some(ModelConfig::Recommend(r)) => Some(("a recommend event's item", r.item.as_str())),
        _ => None,
    };
    if let (Some((what, name)), Some(bounds)) = (not_numeric, &bounds) {
        for entry in bounds.iter().filter(|b| b.value.field == name) {
            let message =
                format!("bounds.{name}: \"{name}\" is {what}, not a number a range applies to");
            s.error(entry.span, message);
        }
    }
    for field in string_fields {
        if label != Some(field.value.as_str()) {
            let message = format!(
                "fields.{} = \"vs\" reads a SenML string value, which only the target of kind = \"classification\" (a label) can use (use \"v\", \"vb\" or \"s\")",
                field.value
            );
            s.error(field.span, message);
        }
    }
    s.finish(&component, problems);

    let (
        Some(name_value),
        Some(topics),
        Some(format),
        Some(key),
        Some(time),
        Some(fields),
        Some(bounds),
        Some(operators),
        Some(model),
    ) = (
        &name, topics, format, key, time, fields, bounds, operators, model,
    )
    else {
        return (None, name, from);
    };
    let pipeline = PipelineConfig {
        name: name_value.value.clone(),
        topics: topics.into_iter().map(|topic| topic.value).collect(),
        format,
        key,
        time,
        max_skew,
        fields,
        bounds: bounds.into_iter().map(|b| b.value).collect(),
        from: from.as_ref().map(|from| from.value.clone()),
        operators,
        anomaly,
        output: output.map_or_else(
            || TopicTemplate::builtin(default_output(&model)),
            |v| v.value,
        ),
        model,
        output_qos,
        max_payload_bytes,
    };
    (Some(pipeline), name, from)
}

/// `topics`: required, non-empty, every entry a valid MQTT filter.
pub(super) fn topics(s: &mut Section<'_>) -> Option<Vec<Spanned<TopicFilter>>> {
    let list = s.require::<StringList>("topics")?;
    let topics = list.value.0;
    if topics.is_empty() {
        let message =
            "topics must list at least one MQTT topic filter, e.g. [\"sensors/+/temperature\"]";
        s.error(list.span, message.into());
        return None;
    }
    let mut filters = Vec::with_capacity(topics.len());
    let mut valid = true;
    for (index, topic) in topics.into_iter().enumerate() {
        match TopicFilter::parse(&topic.value) {
            Ok(filter) => filters.push(Spanned {
                value: filter,
                span: topic.span,
            }),
            Err(reason) => {
                let message = format!(
                    "topics[{index}] \"{}\" is not a valid MQTT topic filter: {reason}",
                    topic.value
                );
                s.error(topic.span, message);
                valid = false;
            }
        }
    }
    valid.then_some(filters)
}

/// `format`, and `columns`, `delimiter` and `header` for `format = "csv"` (reported for any
/// other format). `None` when something is wrong.
pub(super) fn format(s: &mut Section<'_>) -> Option<PayloadFormat> {
    let given = s.helper.contains("format");
    let columns_given = s.helper.contains("columns");
    let format = s.string("format");
    let columns = s.get::<StringList>("columns");
    let delimiter = s.string("delimiter");
    let header = s.get::<bool>("header");
    let name = match &format {
        Some(format) => format.value.as_str(),
        // A mistyped `format` was reported; the CSV keys cannot be judged.
        None if given => return None,
        None => "json",
    };
    let simple = match name {
        "json" => PayloadFormat::Json,
        "number" => PayloadFormat::Number,
        "senml" => PayloadFormat::Senml,
        "csv" => return csv_format(s, columns, columns_given, delimiter, header),
        other => {
            let message = format!(
                "format must be \"json\", \"number\", \"csv\" or \"senml\" (got \"{other}\")"
            );
            if let Some(format) = &format {
                s.error(format.span, message);
            }
            return None;
        }
    };
    let spans = [
        ("columns", columns.map(|v| v.span)),
        ("delimiter", delimiter.map(|v| v.span)),
        ("header", header.map(|v| v.span)),
    ];
    let mut valid = true;
    for (key, span) in spans {
        if let Some(span) = span {
            let message = format!(
                "{key} only applies to format = \"csv\" (this pipeline has format = \"{name}\")"
            );
            s.error(span, message);
            valid = false;
        }
    }
    valid.then_some(simple)
}

/// `format = "csv"`: `columns` required, non-empty, distinct; `delimiter` one ASCII character.
pub(super) fn csv_format(
    s: &mut Section<'_>,
    columns: Option<Spanned<StringList>>,
    columns_given: bool,
    delimiter: Option<Spanned<String>>,
    header: Option<Spanned<bool>>,
) -> Option<PayloadFormat> {
    let mut valid = true;
    let delimiter = match delimiter {
        None => DEFAULT_CSV_DELIMITER,
        Some(text) => match text.value.as_bytes() {
            [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\r' | b'\n') => *byte,
            _ => {
                let message = format!(
                    "delimiter must be one ASCII character other than '\"' and line breaks, e.g. \";\" or \"\\t\" (got {:?})",
                    text.value
                );
                s.error(text.span, message);
                valid = false;
                DEFAULT_CSV_DELIMITER
            }
        },
    };
    let Some(list) = columns else {
        // A mistyped `columns` was reported by `get`.
        if !columns_given {
            let span = s.span;
            let message = "missing required key \"columns\" (format = \"csv\" names the cells of a line, e.g. columns = [\"ts\", \"sensor\", \"temp\"])";
            s.error(span, message.into());
        }
        return None;
    };
    let entries = list.value.0;
    if entries.is_empty() {
        let message =
            "columns must name at least one column, e.g. columns = [\"ts\", \"sensor\", \"temp\"]";
        s.error(list.span, message.into());
        return None;
    }
    for (index, column) in entries.iter().enumerate() {
        if column.value.is_empty() {
            s.error(column.span, format!("columns[{index}] must not be empty"));
            valid = false;
        } else if let Some(first) = entries[..index]
            .iter()
            .position(|other| other.value == column.value)
        {
            let message = format!(
                "columns[{index}] \"{}\" is already columns[{first}] (column names must be distinct)",
                column.value
            );
            s.error(column.span, message);
            valid = false;
        }
    }
    valid.then(|| {
        PayloadFormat::Csv(CsvConfig {
            columns: entries.into_iter().map(|column| column.value).collect(),
            delimiter,
            header: header.is_some_and(|h| h.value),
        })
    })
}

/// `key`: where the per-key actor's key comes from; `topic[N]` must exist in every topic, a
/// pointer must fit the format, `name` and `basename` are SenML's. SenML's default is `name`.
pub(super) fn key(
    s: &mut Section<'_>,
    topics: &[Spanned<TopicFilter>],
    format: Option<&PayloadFormat>,
) -> Option<KeySource> {
    let Some(text) = s.string("key") else {
        return Some(match format {
            Some(PayloadFormat::Senml) => KeySource::RecordName,
            _ => KeySource::Topic,
        });
    };
    let source = match rules::parse_key_source(&text.value) {
        Ok(source) => source,
        Err(reason) => {
            let message = format!("key \"{}\" is not a valid key source: {reason}", text.value);
            s.error(text.span, message);
            return None;
        }
    };
    let mut valid = true;
    let mut error = |s: &mut Section<'_>, message: String| {
        s.error(text.span, message);
        valid = false;
    };
    match (&source, format) {
        (KeySource::TopicLevel(level), _) => {
            for topic in topics {
                if !topic.value.has_level(*level) {
                    let count = topic.value.level_count();
                    let message = format!(
                        "key \"{}\" reads topic level {level} (0-based), but topic filter \"{}\" only matches topics with {count} level(s)",
                        text.value, topic.value
                    );
                    error(s, message);
                }
            }
        }
        (KeySource::Pointer(_), Some(PayloadFormat::Number)) => {
            let message = format!(
                "key \"{}\" is a JSON pointer, but format = \"number\" payloads are bare numbers (use \"topic\" or \"topic[N]\")",
                text.value
            );
            error(s, message);
        }
        (KeySource::Pointer(_), Some(PayloadFormat::Senml)) => {
            let message = format!(
                "key \"{}\" is a JSON pointer, but a SenML pack is read record by record (use \"name\", \"basename\", \"topic\" or \"topic[N]\")",
                text.value
            );
            error(s, message);
        }
        (KeySource::Pointer(pointer), Some(PayloadFormat::Csv(csv))) => {
            if let Some(reason) = rules::csv_column_problem(pointer, &csv.columns) {
                error(s, format!("key \"{pointer}\" {reason}"));
            }
        }
        (KeySource::RecordName | KeySource::BaseName, Some(other))
            if *other != PayloadFormat::Senml =>
        {
            let message = format!(
                "key \"{}\" names a SenML record, so it needs format = \"senml\" (this pipeline has format = \"{}\")",
                text.value,
                other.name()
            );
            error(s, message);
        }
        _ => {}
    }
    valid.then_some(source)
}

/// `time` and `time_unit`. `Some(None)` means "no event time": use arrival time.
pub(super) fn time(
    s: &mut Section<'_>,
    format: Option<&PayloadFormat>,
) -> Option<Option<TimeSource>> {
    // Whether `time` was written at all, even with a wrong type: a mistyped `time` must
    // not also cause "time_unit without time".
    let time_given = s.helper.contains("time");
    let pointer = s.string("time");
    let unit = s.string("time_unit");
    let mut valid = !time_given || pointer.is_some();
    if let Some(pointer) = &pointer {
        if let Some(reason) = parse_pointer(&pointer.value).err() {
            let message = format!("time \"{}\" is not a JSON pointer: {reason}", pointer.value);
            s.error(pointer.span, message);
            valid = false;
        } else if let Some(message) = match format {
            Some(PayloadFormat::Number) => Some("time cannot be read when format = \"number\": the payload is a bare number (remove time to use the arrival time)".to_owned()),
            Some(PayloadFormat::Senml) => Some("time cannot be set when format = \"senml\": each SenML record carries its own time (bt + t, RFC 8428; remove time)".to_owned()),
            Some(PayloadFormat::Csv(csv)) => rules::csv_column_problem(&pointer.value, &csv.columns)
                .map(|reason| format!("time \"{}\" {reason}", pointer.value)),
            _ => None,
        } {
            s.error(pointer.span, message);
            valid = false;
        }
    }
    let time_unit = match &unit {
        None => TimeUnit::Auto,
        Some(unit) => match unit.value.as_str() {
            "auto" => TimeUnit::Auto,
            "s" => TimeUnit::Seconds,
            "ms" => TimeUnit::Milliseconds,
            "rfc3339" => TimeUnit::Rfc3339,
            other => {
                let message = format!(
                    "time_unit must be \"auto\", \"s\", \"ms\" or \"rfc3339\" (got \"{other}\")"
                );
                s.error(unit.span, message);
                valid = false;
                TimeUnit::Auto
            }
        },
    };
    if let (Some(unit), false) = (&unit, time_given) {
        let message = if format == Some(&PayloadFormat::Senml) {
            "time_unit does not apply to format = \"senml\" (SenML times are seconds, RFC 8428)"
        } else {
            "time_unit is set but time is not (set time to the JSON pointer of the event time, e.g. time = \"/ts\")"
        };
        s.error(unit.span, message.into());
        valid = false;
    }
    let source = pointer.map(|pointer| TimeSource {
        pointer: pointer.value,
        unit: time_unit,
    });
    valid.then_some(source)
}

/// `max_skew`: how far an event time may be ahead of the daemon's clock (default
/// [`DEFAULT_MAX_SKEW`]). Only for a pipeline with event times: one with `time`, a chained
/// one (`/time` by default) or SenML.
pub(super) fn max_skew(
    s: &mut Section<'_>,
    time: Option<&Option<TimeSource>>,
    format: Option<&PayloadFormat>,
) -> Duration {
    let Some(max_skew) = s.duration("max_skew", Duration::from_secs(1)) else {
        return DEFAULT_MAX_SKEW;
    };
    // A mistyped `time` or `format` was reported already: no second error about it here.
    let no_event_time =
        matches!(time, Some(None)) && format.is_some_and(|f| *f != PayloadFormat::Senml);
    if no_event_time {
        s.error(
            max_skew.span,
            "max_skew is set but the pipeline has no event time: readings take their arrival time, which is never skewed (set time to the JSON pointer of the event time, or remove max_skew)".into(),
        );
    }
    max_skew.value
}

/// How a format reads field pointers, for [`fields`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldSyntax<'a> {
    /// JSON pointers.
    Json,
    /// One field with pointer `""`.
    Number,
    /// `"/column"`.
    Csv(&'a [String]),
    /// `key = "name"`: one field, the value each record gives (`"v"`, `"vb"`, `"s"`, `"vs"`).
    SenmlValue,
    /// Grouped records: `"/name"`, one record name relative to the base name.
    SenmlRecord,
    /// Unknown (the format or the SenML key is wrong): only JSON pointer syntax is checked.
    Unknown,
}

/// `fields = { name = "/pointer" }`, in file order, checked as the format reads them. Also
/// returns the fields that read a SenML string value (`"vs"`), with the pointer's span, to be
/// checked against the model.
pub(super) fn fields(
    s: &mut Section<'_>,
    format: Option<&PayloadFormat>,
    key: Option<&KeySource>,
) -> (Option<Vec<FieldConfig>>, Vec<Spanned<String>>) {
    let syntax = match (format, key) {
        (Some(PayloadFormat::Json), _) => FieldSyntax::Json,
        (Some(PayloadFormat::Number), _) => FieldSyntax::Number,
        (Some(PayloadFormat::Csv(csv)), _) => FieldSyntax::Csv(&csv.columns),
        (Some(PayloadFormat::Senml), Some(KeySource::RecordName)) => FieldSyntax::SenmlValue,
        (Some(PayloadFormat::Senml), Some(_)) => FieldSyntax::SenmlRecord,
        (Some(PayloadFormat::Senml), None) | (None, _) => FieldSyntax::Unknown,
    };
    let mut string_fields = Vec::new();
    let Some((_, value)) = s.take("fields") else {
        let example = match syntax {
            // A bare number is one field; `value` is its conventional name.
            FieldSyntax::Number => {
                let field = FieldConfig {
                    name: "value".into(),
                    pointer: String::new(),
                };
                return (Some(vec![field]), string_fields);
            }
            FieldSyntax::SenmlValue => {
                let field = FieldConfig {
                    name: "value".into(),
                    pointer: DEFAULT_SENML_VALUE.into(),
                };
                return (Some(vec![field]), string_fields);
            }
            FieldSyntax::Unknown => return (None, string_fields),
            FieldSyntax::Json => "format = \"json\" reads each field by JSON pointer, e.g. fields = { temp = \"/value\" }",
            FieldSyntax::Csv(_) => "format = \"csv\" reads each field from a column, e.g. fields = { temp = \"/temp\" }",
            FieldSyntax::SenmlRecord => "with key = \"basename\" or a topic key, each field names a SenML record relative to the base name, e.g. fields = { voltage = \"/voltage\" }",
        };
        let span = s.span;
        s.error(span, format!("missing required key \"fields\" ({example})"));
        return (None, string_fields);
    };
    let Some(table) = value.as_table() else {
        let message = format!(
            "fields must be a table of name = \"/json/pointer\" entries (got {})",
            a(value.as_ref().type_str())
        );
        s.error(value.span, message);
        return (None, string_fields);
    };
    // toml-span tables are sorted by name; the key spans give back the order as written,
    // which is the order models and outputs see the fields in.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span.start);
    if entries.is_empty() {
        let message = "fields must have at least one entry, e.g. fields = { temp = \"/value\" }";
        s.error(value.span, message.into());
        return (None, string_fields);
    }
    let mut valid = true;
    let mut fields = Vec::with_capacity(entries.len());
    for (key, pointer) in &entries {
        if !rules::is_valid_field_name(&key.name) {
            let message = format!(
                "field name \"{}\" is not usable: it becomes a level of output topics, so it must be non-empty and without '/', '+', '#', '{{' or '}}'",
                key.name
            );
            s.error(key.span, message);
            valid = false;
        }
        let Some(text) = pointer.as_str() else {
            let message = format!(
                "fields.{} must be a JSON pointer string such as \"/value\" (got {})",
                key.name,
                a(pointer.as_ref().type_str())
            );
            s.error(pointer.span, message);
            valid = false;
            continue;
        };
        let problem = match syntax {
            FieldSyntax::SenmlValue if !SENML_VALUES.contains(&text) => Some(format!(
                "fields.{} \"{text}\" must be \"v\", \"vb\", \"s\" or \"vs\": with key = \"name\" each SenML record is a reading and its field reads one of these values (to read records by name, \"/voltage\", use key = \"basename\" or a topic key)",
                key.name
            )),
            FieldSyntax::SenmlValue => {
                if text == "vs" {
                    string_fields.push(Spanned::with_span(key.name.to_string(), pointer.span));
                }
                None
            }
            FieldSyntax::SenmlRecord if SENML_VALUES.contains(&text) => Some(format!(
                "fields.{} \"{text}\" selects a record's value, which only key = \"name\" does; with key = \"basename\" or a topic key each field names a SenML record relative to the base name, e.g. \"/temperature\"",
                key.name
            )),
            _ => match parse_pointer(text).err() {
                Some(reason) => Some(format!(
                    "fields.{} \"{text}\" is not a JSON pointer: {reason}",
                    key.name
                )),
                None => match syntax {
                    FieldSyntax::Csv(columns) => rules::csv_column_problem(text, columns)
                        .map(|reason| format!("fields.{} \"{text}\" {reason}", key.name)),
                    FieldSyntax::SenmlRecord => rules::senml_record_problem(text)
                        .map(|reason| format!("fields.{} \"{text}\" {reason}", key.name)),
                    _ => None,
                },
            },
        };
        match problem {
            Some(message) => {
                s.error(pointer.span, message);
                valid = false;
            }
            None => fields.push(FieldConfig {
                name: key.name.to_string(),
                pointer: text.to_owned(),
            }),
        }
    }
    let single = match syntax {
        FieldSyntax::Number => Some("with pointer \"\" when format = \"number\""),
        FieldSyntax::SenmlValue => Some(
            "when format = \"senml\" and key = \"name\" (each record is a reading with one value)",
        ),
        _ => None,
    };
    if let Some(rule) = single {
        if let [(key, pointer)] = entries.as_slice() {
            if syntax == FieldSyntax::Number
                && pointer.as_str().is_some_and(|text| !text.is_empty())
            {
                let message = format!(
                    "fields.{} must be \"\" when format = \"number\" (the payload is one bare number)",
                    key.name
                );
                s.error(pointer.span, message);
                valid = false;
            }
        } else {
            let message = format!(
                "fields must have exactly one entry {rule} (got {} entries)",
                entries.len()
            );
            s.error(value.span, message);
            valid = false;
        }
    }
    (valid.then_some(fields), string_fields)
}
