//! Input validation at the door: an invoke body checked against its function's `input_schema`,
//! and published events' data against their topic's `schema`, before anything is claimed,
//! admitted or stored. A refusal is 400 `invalid-input`, counted in `keel_invalid_input_total`.

use keel_core::events::CloudEvent;
use keel_core::schema::{SchemaError, MAX_ERRORS};

use crate::functions::Function;
use crate::metric_definitions::SchemaTarget;
use crate::problem::Problem;
use crate::state::Shared;

/// Checks an invoke body against the function's `input_schema`, if it has one.
pub(super) fn check_invoke(shared: &Shared, function: &Function, body: &[u8]) -> Result<(), Problem> {
    let Some(schema) = &function.config.input_schema else { return Ok(()) };
    shared.limits.check_json("the body", body)?;
    schema.check_body(body).map_err(|invalid| {
        let name = &function.config.name;
        shared.metrics.invalid_input(SchemaTarget::Function, name);
        let errors = invalid.into_errors();
        Problem::invalid_input(format!("the body does not match {name}'s input_schema; nothing was stored"), &errors)
    })
}

/// Checks each payload of a bulk admission against the function's `input_schema`, if it has one.
/// All or nothing: any invalid payload refuses the batch, each error named by its JSON Pointer in
/// the body (`/3/email`), with `index`, the first invalid payload.
pub(super) fn check_bulk(shared: &Shared, function: &Function, payloads: &[bytes::Bytes]) -> Result<(), Problem> {
    let Some(schema) = &function.config.input_schema else { return Ok(()) };
    let mut first_invalid = None;
    let mut errors: Vec<SchemaError> = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let Err(invalid) = schema.check_body(payload) else { continue };
        first_invalid.get_or_insert(i);
        errors.extend(invalid.into_errors().into_iter().map(|e| SchemaError { path: format!("/{i}{}", e.path), ..e }));
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    let Some(index) = first_invalid else { return Ok(()) };
    errors.truncate(MAX_ERRORS);
    let name = &function.config.name;
    shared.metrics.invalid_input(SchemaTarget::Function, name);
    let detail = format!(
        "payload {index} of the batch (and any other named in `errors`) does not match {name}'s input_schema; no \
         invocation of the batch was stored"
    );
    Err(Problem::invalid_input(detail, &errors).index(index))
}

/// How the events of a publish were sent, which decides where each one's data is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventsForm {
    /// The body is the data: a plain JSON body, or a binary-mode event.
    Data,
    /// One structured CloudEvent: its data is at `/data`.
    Structured,
    /// A batch: event `i`'s data is at `/i/data`.
    Batch,
}

impl EventsForm {
    /// The JSON Pointer of event `index`'s data in the body.
    fn data_pointer(self, index: usize) -> String {
        match self {
            EventsForm::Data => String::new(),
            EventsForm::Structured => "/data".to_owned(),
            EventsForm::Batch => format!("/{index}/data"),
        }
    }
}

/// Checks each event's data against the topic's `schema`, if it has one. The publish is all or
/// nothing: any invalid event refuses them all, naming where in the body each error is (and, for
/// a batch, the `index` of the first invalid event).
pub(super) fn check_publish(
    shared: &Shared,
    topic: &str,
    events: &[CloudEvent],
    form: EventsForm,
) -> Result<(), Problem> {
    let Some(schema) = shared.config.topics.get(topic).and_then(|t| t.schema.as_ref()) else { return Ok(()) };
    let mut first_invalid = None;
    let mut errors: Vec<SchemaError> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let Err(invalid) = schema.check_event_data(&event.data) else { continue };
        first_invalid.get_or_insert(i);
        let at = form.data_pointer(i);
        errors.extend(invalid.into_errors().into_iter().map(|e| SchemaError { path: format!("{at}{}", e.path), ..e }));
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    let Some(index) = first_invalid else { return Ok(()) };
    errors.truncate(MAX_ERRORS);
    shared.metrics.invalid_input(SchemaTarget::Topic, topic);
    let detail = match form {
        EventsForm::Batch => format!(
            "event {index} of the batch (and any other named in `errors`) does not match the schema of topic \
             {topic:?}; no event of the batch was stored"
        ),
        _ => format!("the event's data does not match the schema of topic {topic:?}; nothing was stored"),
    };
    let problem = Problem::invalid_input(detail, &errors);
    Err(if form == EventsForm::Batch { problem.index(index) } else { problem })
}
