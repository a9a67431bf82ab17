//! What the OpenAPI document says of every operation beyond the answers its handler
//! names: the errors every operation can give, as they are given. Each handler documents
//! its own successes and the errors of its own logic (404, 409, 422, 503); this adds
//! what the extractors and the server answer for it, so a client generated from the
//! document reads every answer:
//!
//! - every error is `application/problem+json` with the `Problem` schema;
//! - 401 on every operation (no token, or one unknown, revoked or expired), and the
//!   bearer scheme named on each;
//! - 403 on every write (a token whose role is below the operation's); a read that
//!   needs a role names its own;
//! - 400 where a path or query parameter can fail to parse;
//! - 400, 413, 415 and 422 where there is a JSON body (not JSON, too large, not sent
//!   as `application/json`, a field missing or of the wrong type);
//! - 500 everywhere (a failure of ours, answered without its text).
//!
//! The contract test (`tests/api.rs`) runs Schemathesis against `copydesk serve` and
//! fails on any answer this document does not describe.

use utoipa::openapi::{
    ContentBuilder, Object, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema, Type,
    path::{Operation, PathItem},
    security::SecurityRequirement,
};

use super::problem::PROBLEM_JSON;

/// Completes `doc` as the module says.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for (write, op) in operations(item) {
            complete_operation(op, write);
        }
    }
}

/// Each operation of a path, and whether it writes (any method but GET).
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, item.get.as_mut()),
        (true, item.put.as_mut()),
        (true, item.post.as_mut()),
        (true, item.delete.as_mut()),
        (true, item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(write, op)| op.map(|op| (write, op)))
}

fn complete_operation(op: &mut Operation, write: bool) {
    // Errors the handler named: their body is a problem document, whatever the
    // handler's annotation said.
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && !status.starts_with('2')
        {
            response.content.clear();
            response
                .content
                .insert(PROBLEM_JSON.into(), problem_content());
        }
    }
    let add = |op: &mut Operation, status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(PROBLEM_JSON, problem_content())
                        .build(),
                )
            });
    };
    add(
        op,
        "401",
        "no token, or one that is unknown, revoked or expired",
    );
    if write {
        add(op, "403", "the token's role is below this operation's");
    }
    if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        add(op, "400", "a path or query parameter does not parse");
    }
    if op.request_body.is_some() {
        add(op, "400", "the body is not JSON");
        add(op, "413", "the body is larger than `[http] max_body_bytes`");
        add(op, "415", "the body was not sent as `application/json`");
        add(
            op,
            "422",
            "a field is missing, unknown or of the wrong type",
        );
    }
    add(
        op,
        "500",
        "the server failed to answer; its log says why (never in the answer)",
    );
    op.security
        .get_or_insert_with(|| vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
}

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

/// A string that is one of `words`.
fn one_of(words: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words.iter().copied()))
        .build()
}

/// Named schemas of the words the API reads as text and checks itself (so its errors
/// name the field): each is a component of the document, so a client generated from
/// it gets an enum type.
macro_rules! schema {
    ($($(#[$meta:meta])* $name:ident = $schema:expr;)+) => {$(
        $(#[$meta])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::Object($schema))
            }
        }

        impl utoipa::ToSchema for $name {}
    )+};
}

schema! {
    /// A token's role.
    TokenRole = one_of(crate::domain::TokenRole::WORDS);
    /// A publishing platform.
    Platform = one_of(crate::domain::Platform::WORDS);
    /// A channel a pipeline drafts for.
    Channel = one_of(crate::domain::Channel::WORDS);
    /// A job's status.
    JobStatus = one_of(copydesk_queue::JobStatus::WORDS);
    /// An approval's status.
    ApprovalStatus = one_of(crate::domain::ApprovalStatus::WORDS);
    /// What a bulk call does.
    BulkAction = one_of(&["retry", "cancel"]);
    /// A listing's order.
    Order = one_of(&["oldest", "newest"]);
    /// What cost is grouped by.
    CostGroup = one_of(&["project", "channel", "model", "day"]);
    /// A lifecycle event's type.
    EventType = one_of(&crate::store::events::TYPES);
    /// A duration: a whole number above zero and s, m, h or d (`90d`, `12h`), at most
    /// `36500d`. (Not
    /// named `Duration`: the derive takes that name for its own type.)
    Period = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^0*[1-9][0-9]{0,8}[smhd]$"))
        .build();
    /// Text that says something: at least one character that is not white space.
    NonBlank = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("\\S"))
        .build();
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    fn words<S: PartialSchema>() -> Vec<String> {
        serde_json::from_value(serde_json::to_value(S::schema()).unwrap()["enum"].clone()).unwrap()
    }

    /// The word lists written here for types of other modules are the words those
    /// types read, each of them.
    #[test]
    fn the_documented_words_are_the_ones_the_api_reads() {
        let bulk = words::<BulkAction>();
        assert_eq!(bulk.len(), 2);
        for w in &bulk {
            serde_json::from_value::<copydesk_queue::ops::BulkAction>(serde_json::json!(w))
                .unwrap_or_else(|e| panic!("{w}: {e}"));
        }
        let groups = words::<CostGroup>();
        assert_eq!(groups.len(), 4);
        for w in &groups {
            serde_json::from_value::<crate::store::runs::CostGroup>(serde_json::json!(w))
                .unwrap_or_else(|e| panic!("{w}: {e}"));
        }
        assert_eq!(words::<EventType>(), crate::store::events::TYPES);
    }
}
