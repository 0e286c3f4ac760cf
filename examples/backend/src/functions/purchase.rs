//! `purchase` (sync, called with an `Idempotency-Key`): checks the balance, charges the payments
//! provider through Keel's egress (`dependencies = ["payments"]`; the provider deduplicates on
//! the key Keel forwards, `{invocation_id}/payments/1`, so a retried attempt charges once),
//! debits the balance with `if_version`, grants the item, emits `purchase.completed`. Keel
//! replays the stored answer for a repeated key, so a double-clicked "buy" debits once.

use keel_sdk::{Effects, Error, Event, Reply, Request};
use serde::Deserialize;
use serde_json::json;

use super::outbound;

/// What can be bought, and its price in credits.
pub const CATALOG: [(&str, u64); 3] = [("potion", 5), ("shield", 20), ("sword", 30)];

#[derive(Debug, Deserialize)]
struct Order {
    user_id: String,
    item: String,
}

/// `{"user_id", "item"}` → 200 `{"user_id", "item", "price", "balance", "charge_id"}`;
/// 404 for an unknown user, 402 when the balance is short, 422 for an unknown item.
pub async fn purchase(req: Request) -> Result<Reply, Error> {
    let order: Order = req.json()?;
    let Some(&(item, price)) = CATALOG.iter().find(|(name, _)| *name == order.item) else {
        let items: Vec<&str> = CATALOG.iter().map(|(name, _)| *name).collect();
        return Err(Error::permanent(format!("unknown item {:?}; expected one of {}", order.item, items.join(", "))));
    };
    let user = order.user_id;
    let balance = req
        .ctx
        .kv_get::<u64>("balances", &user)
        .await?
        .ok_or_else(|| Error::permanent(format!("no user {user:?}; register first")).with_status(404))?;
    if balance.value < price {
        let message = format!("insufficient balance: {} credits, {item} costs {price}", balance.value);
        return Err(Error::permanent(message).with_status(402));
    }
    let charge = json!({"user_id": user, "item": item, "amount": price});
    let charged = outbound::post(&req.ctx, "payments", "/charges", &charge).await?;
    let inventory = req.ctx.kv_get::<Vec<String>>("inventory", &user).await?;
    let left = balance.value - price;
    let result = json!({"user_id": user, "item": item, "price": price, "balance": left, "charge_id": charged["id"]});
    let effects = Effects::new().result(&result).put_if_version("balances", &user, left, balance.version);
    let effects = match inventory {
        Some(owned) => {
            let mut items = owned.value;
            items.push(item.to_owned());
            effects.put_if_version("inventory", &user, items, owned.version)
        }
        None => effects.put_if_absent("inventory", &user, [item]),
    };
    Ok(effects.emit(Event::new("purchase.completed").subject(&user).data(&result)).into())
}
