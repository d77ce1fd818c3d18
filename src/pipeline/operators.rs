//! The operators of a pipeline, compiled from `[[pipelines.operators]]`, and their per-key
//! state.
//!
//! Operators run per key, in config order, between decoding and the model (see
//! [`Pipeline::process`](super::Pipeline::process)): a filter may stop a reading, a map
//! rewrites its fields, a dedupe drops a redelivered one, and a window swallows readings and
//! emits one reading of aggregates per closed window, so one decoded reading becomes zero,
//! one or several model steps. Filter and map are stateless; window and dedupe keep state in
//! the key's [`KeyState`](super::KeyState), persisted with the model.

use serde::{Deserialize, Serialize};

use crate::config::{MapConfig, MapSource, OperatorConfig};
use crate::ops::dedupe::{DedupeSpec, DedupeState};
use crate::ops::expr::{Env, Expr};
use crate::ops::window::{WindowSpec, WindowState};

/// One compiled operator.
#[derive(Debug)]
pub(crate) enum Operator {
    /// Keep the reading when the condition holds.
    Filter(Expr),
    /// Rewrite the fields.
    Map(MapOperator),
    /// Aggregate per event-time window; state in [`OperatorState::Window`].
    Window(WindowSpec),
    /// Drop repeated event times; state in [`OperatorState::Dedupe`].
    Dedupe(DedupeSpec),
}

/// A compiled map: `convert` in place, then the outputs in order.
#[derive(Debug)]
pub(crate) struct MapOperator {
    /// `(input index, scale, offset)`.
    convert: Vec<(usize, f64, f64)>,
    /// Derived expressions, over the converted inputs.
    derive: Vec<Expr>,
    /// Where each output field comes from.
    outputs: Vec<MapSource>,
}

impl MapOperator {
    /// Writes the output fields for `values` into `buffers.output` (using `buffers.converted`
    /// as scratch). Allocates nothing once the buffers have grown.
    fn apply(&self, values: &[f64], time: i64, key: &str, buffers: &mut MapBuffers) {
        let converted = &mut buffers.converted;
        converted.clear();
        converted.extend_from_slice(values);
        for &(index, scale, offset) in &self.convert {
            if let Some(value) = converted.get_mut(index) {
                *value = *value * scale + offset;
            }
        }
        let env = Env {
            values: converted,
            time,
            key,
        };
        let output = &mut buffers.output;
        output.clear();
        output.extend(self.outputs.iter().map(|source| {
            match *source {
                MapSource::Input(index) => env.values.get(index).copied().unwrap_or(f64::NAN),
                MapSource::Derived(index) => self
                    .derive
                    .get(index)
                    .map_or(f64::NAN, |expr| expr.eval_number(&env)),
            }
        }));
    }
}

/// Scratch buffers of one map operator (owned by the caller's [`Scratch`](super::Scratch)).
#[derive(Debug, Default)]
pub(crate) struct MapBuffers {
    converted: Vec<f64>,
    /// The map's output reading.
    pub(crate) output: Vec<f64>,
}

/// The per-key state of one stateful operator, in the order of the stateful operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorState {
    /// An open-window set.
    Window(WindowState),
    /// Recently seen event times.
    Dedupe(DedupeState),
}

/// The compiled operator list of a pipeline.
#[derive(Debug, Default)]
pub(crate) struct Operators {
    pub(crate) list: Vec<Operator>,
    /// Number of map operators (each needs its own [`MapBuffers`]).
    pub(crate) maps: usize,
    /// Identifies the operator configuration: stored operator state is only used by a
    /// pipeline with the same configuration.
    pub(crate) fingerprint: u64,
    /// The fields of the readings that come out of the last operator (the model's fields).
    pub(crate) output_names: Vec<String>,
}

impl Operators {
    /// Compiles `configs`, applied to readings whose fields are `names`.
    ///
    /// # Errors
    /// A message naming the operator and the problem (config validation catches these first).
    pub(crate) fn new(configs: &[OperatorConfig], names: &[String]) -> Result<Operators, String> {
        let mut names = names.to_vec();
        let mut list = Vec::with_capacity(configs.len());
        let mut maps = 0;
        for (index, config) in configs.iter().enumerate() {
            let context =
                |message: String| format!("operators[{index}] ({}): {message}", config.name());
            let operator = match config {
                OperatorConfig::Filter { expr } => Operator::Filter(expr.expr().clone()),
                OperatorConfig::Map(map) => {
                    maps += 1;
                    let compiled = compile_map(map, &names).map_err(context)?;
                    names = map.outputs(&names).into_iter().map(|(n, _)| n).collect();
                    Operator::Map(compiled)
                }
                OperatorConfig::Window(window) => {
                    names = window.aggregates.iter().map(|a| a.name.clone()).collect();
                    Operator::Window(window.spec.clone())
                }
                OperatorConfig::Dedupe { capacity } => Operator::Dedupe(
                    DedupeSpec::new(*capacity).map_err(|e| context(e.to_string()))?,
                ),
            };
            list.push(operator);
        }
        Ok(Operators {
            list,
            maps,
            fingerprint: fingerprint(&format!("{configs:?}")),
            output_names: names,
        })
    }

    /// Fresh per-key state for the stateful operators.
    pub(crate) fn new_states(&self) -> Vec<OperatorState> {
        self.list
            .iter()
            .filter_map(|op| match op {
                Operator::Window(spec) => Some(OperatorState::Window(spec.new_state())),
                Operator::Dedupe(spec) => Some(OperatorState::Dedupe(spec.new_state())),
                Operator::Filter(_) | Operator::Map(_) => None,
            })
            .collect()
    }
}

fn compile_map(map: &MapConfig, names: &[String]) -> Result<MapOperator, String> {
    let position = |name: &str| {
        names
            .iter()
            .position(|field| field == name)
            .ok_or_else(|| format!("\"{name}\" is not a field here"))
    };
    let convert = map
        .convert
        .iter()
        .map(|(name, scale, offset)| Ok((position(name)?, *scale, *offset)))
        .collect::<Result<Vec<_>, String>>()?;
    let derive = map
        .derive
        .iter()
        .map(|(_, expr)| expr.expr().clone())
        .collect();
    let outputs = map.outputs(names).into_iter().map(|(_, s)| s).collect();
    Ok(MapOperator {
        convert,
        derive,
        outputs,
    })
}

/// FNV-1a: a hash that is the same in every build and process (unlike std's `DefaultHasher`
/// seeds, it may be stored).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What happened to a reading in the operators, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// A filter was false.
    Filtered,
    /// Its windows were all closed already.
    Late,
    /// Its event time was seen before.
    Duplicate,
}

/// Runs `op` on one reading and hands each reading it lets through (or produces) to `next`.
/// Returns why the reading stopped here, if it did.
pub(crate) fn apply_one(
    op: &Operator,
    state: Option<&mut OperatorState>,
    map_buffers: Option<&mut MapBuffers>,
    key: &str,
    time: i64,
    values: &[f64],
    mut next: impl FnMut(i64, &[f64]),
) -> Option<Stopped> {
    match op {
        Operator::Filter(expr) => {
            if expr.eval_bool(&Env { values, time, key }) {
                next(time, values);
                None
            } else {
                Some(Stopped::Filtered)
            }
        }
        Operator::Map(map) => {
            let buffers = map_buffers?;
            map.apply(values, time, key, buffers);
            next(time, &buffers.output);
            None
        }
        Operator::Dedupe(spec) => {
            let Some(OperatorState::Dedupe(seen)) = state else {
                return None;
            };
            if spec.seen_or_insert(seen, time) {
                Some(Stopped::Duplicate)
            } else {
                next(time, values);
                None
            }
        }
        Operator::Window(spec) => {
            let Some(OperatorState::Window(windows)) = state else {
                return None;
            };
            // A closed window's reading carries the window's end as its time.
            match spec.push(windows, time, values, |_start, end, aggregates| {
                next(end, aggregates)
            }) {
                Ok(()) => None,
                Err(_) => Some(Stopped::Late),
            }
        }
    }
}
