//! `record-sales` (a batch function, subscribed to `purchase.completed`): writes each completed
//! purchase into the sales ledger (`sales/{charge_id}`). Keel delivers the events in batches
//! (`batch = { max_size = 50, max_wait = "20ms" }`): one request carries many sales, and each
//! sale is still its own delivery — its own effects, retries and DLQ entry — so one malformed
//! event is dead-lettered alone while the rest of its batch is recorded.

use keel_sdk::{BatchReply, Effects, Error, Request};
use serde::Deserialize;
use serde_json::json;

/// The data of a `purchase.completed` event (the purchase's result).
#[derive(Debug, Deserialize)]
struct Sale {
    user_id: String,
    item: String,
    price: u64,
    charge_id: String,
}

/// Records every sale of the batch, each with its own effects; a sale that cannot be read fails
/// alone, for good.
pub async fn record_sales(items: Vec<Request>) -> Result<BatchReply, Error> {
    let mut reply = BatchReply::new();
    for item in &items {
        let id = item.ctx.invocation_id();
        reply = match item.json::<Sale>() {
            Ok(sale) => {
                let entry = json!({"user_id": sale.user_id, "item": sale.item, "price": sale.price});
                let effects = Effects::new().result(json!({"recorded": sale.charge_id}));
                reply.effects(id, effects.put("sales", &sale.charge_id, entry))
            }
            Err(e) => reply.fail(id, e),
        };
    }
    Ok(reply)
}
