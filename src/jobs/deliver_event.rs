//! `deliver_event`: delivers one lifecycle event to one subscription, as a Standard
//! Webhooks message: the body is `{"type", "timestamp", "data"}`, `webhook-id` is
//! `evt_<event id>` (the same on every retry and to every subscription, so a receiver
//! can drop a repeat), and the signature is made with the subscription's `whsec_`
//! secret through the same sending path as a notification's webhook (the SSRF guard,
//! the URL's path kept out of rows and logs). An answer other than 2xx, or none, is
//! retried with backoff (8 attempts); after the last the delivery is `failed`.

use copydesk_queue::{JobArgs, JobError, Outcome, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Ctx,
    notify::{Sealed, post_sealed},
};
use crate::{
    domain::DeliveryStatus,
    store::{self, events::Delivery, notifications::Deliveries},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverEventArgs {
    pub delivery_id: Uuid,
}

impl JobArgs for DeliverEventArgs {
    const KIND: &'static str = "deliver_event";
    const SCHEMA: &'static str = include_str!("../../jobs/deliver_event/schema.json");
}

/// The message a subscription receives for an event.
pub fn message(d: &Delivery) -> Value {
    json!({
        "type": d.kind,
        "timestamp": d.created_at,
        "data": d.data,
    })
}

/// The Standard Webhooks message id of an event.
pub fn message_id(event: Uuid) -> String {
    format!("evt_{event}")
}

pub async fn run(ctx: Ctx, args: DeliverEventArgs) -> Result<Outcome, JobError> {
    let Some(d) = store::events::delivery(&ctx.pool, args.delivery_id)
        .await
        .retryable()?
    else {
        return Ok(Outcome::done_with(
            json!({"delivered": false, "why": "the delivery is gone (its subscription was removed)"}),
        ));
    };
    if d.status == DeliveryStatus::Delivered {
        return Ok(Outcome::done_with(json!({"delivered": true})));
    }
    let body = serde_json::to_vec(&message(&d)).expect("JSON values serialise");
    let (id, delivery, kind) = (message_id(d.event_id), d.id, d.kind);
    let webhook = Sealed {
        owner: format!("event subscription {}", d.subscription_id),
        target: d.target,
        url: d.url,
        secret: d.secret,
    };
    post_sealed(&ctx, &webhook, &id, body)
        .await?
        .recorded(&ctx, Deliveries::Events, delivery, json!({"type": kind}))
        .await
}
