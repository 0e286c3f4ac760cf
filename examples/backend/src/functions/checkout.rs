//! The steps of the `checkout` workflow (a saga, `[workflows.checkout]` in keel.toml): reserve the
//! stock, charge the card, create the shipment; when a step fails for good, Keel runs the
//! compensations of the steps that succeeded, in reverse — refund the card, release the stock.
//!
//! Each is an ordinary function: Keel invokes it with its retries and DLQ, and with
//! `idempotency-key: {run_id}/{step}` (`{run_id}/{step}/compensate` for a compensation), the same
//! for every attempt, so the hold and the shipment are named after the run and written with plain
//! puts: doing a step twice writes the same thing twice. The first step gets the run's input; a
//! later step gets `{"input", "steps": {"reserve": <its output>, …}}`; a compensation gets
//! `{"input", "steps", "failed_step", "error"}`. The steps are read by the names keel.toml gives
//! them (`reserve`, `charge`).

use std::collections::BTreeMap;

use keel_sdk::{Ctx, Effects, Error, Reply, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::outbound;
use super::purchase::CATALOG;

/// Most of one item an order may hold.
const MAX_QUANTITY: u64 = 10;

/// A run's input: `{"item": "sword", "quantity": 2}`; `"fail_shipping": true` makes the carrier
/// refuse the parcel, to see the run compensated.
#[derive(Debug, Deserialize)]
struct Order {
    item: String,
    #[serde(default = "one")]
    quantity: u64,
    #[serde(default)]
    fail_shipping: bool,
}

fn one() -> u64 {
    1
}

/// What a step after the first, or a compensation, receives. (A compensation's `failed_step` and
/// `error` say why it runs; these compensations undo the same whatever the reason.)
#[derive(Debug, Deserialize)]
struct Later {
    input: Order,
    steps: BTreeMap<String, Value>,
}

impl Later {
    /// What step `name` answered, read as `T`.
    fn output<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        let output = self.steps.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(output).map_err(|e| Error::bad_request(format!("the {name} step's output: {e}")))
    }
}

#[derive(Debug, Deserialize)]
struct Hold {
    hold_id: String,
}

#[derive(Debug, Deserialize)]
struct Charge {
    charge_id: String,
    amount: u64,
}

/// The run this invocation is a step of: the first part of its key (`{run_id}/{step}`), or the
/// invocation itself when called outside a workflow.
fn run_id(ctx: &Ctx) -> String {
    let key = ctx.idempotency_key().unwrap_or(ctx.invocation_id());
    key.split('/').next().unwrap_or(key).to_owned()
}

/// The order's price in credits, refused for good when the item or quantity cannot be sold.
fn price_of(order: &Order) -> Result<u64, Error> {
    let Some(&(_, price)) = CATALOG.iter().find(|(name, _)| *name == order.item) else {
        let items: Vec<&str> = CATALOG.iter().map(|(name, _)| *name).collect();
        return Err(Error::permanent(format!("unknown item {:?}; expected one of {}", order.item, items.join(", "))));
    };
    if !(1..=MAX_QUANTITY).contains(&order.quantity) {
        return Err(Error::permanent(format!("quantity must be 1 to {MAX_QUANTITY}, got {}", order.quantity)));
    }
    Ok(price * order.quantity)
}

/// `reserve-stock` (step `reserve`): puts a hold `holds/hold_{run_id}` on the items →
/// `{"hold_id", "item", "quantity"}`; an unknown item or a bad quantity is refused for good (422),
/// and the run, with nothing yet to undo, is compensated at once.
pub async fn reserve_stock(req: Request) -> Result<Reply, Error> {
    let order: Order = req.json()?;
    price_of(&order)?;
    let hold_id = format!("hold_{}", run_id(&req.ctx));
    let hold = json!({"item": order.item, "quantity": order.quantity, "status": "held"});
    let result = json!({"hold_id": hold_id, "item": order.item, "quantity": order.quantity});
    Ok(Effects::new().result(result).put("holds", &hold_id, hold).into())
}

/// `release-stock` (compensates `reserve`): marks the hold released → `{"released": hold_id}`.
pub async fn release_stock(req: Request) -> Result<Reply, Error> {
    let undo: Later = req.json()?;
    let hold: Hold = undo.output("reserve")?;
    let released = json!({"item": undo.input.item, "quantity": undo.input.quantity, "status": "released"});
    Ok(Effects::new().result(json!({"released": hold.hold_id})).put("holds", &hold.hold_id, released).into())
}

/// `charge-card` (step `charge`): charges the order's price with the payments provider, through
/// Keel's egress (the provider deduplicates on the key Keel forwards, so a retried attempt
/// charges once) → `{"charge_id", "amount"}`.
pub async fn charge_card(req: Request) -> Result<Reply, Error> {
    let step: Later = req.json()?;
    let hold: Hold = step.output("reserve")?;
    let amount = price_of(&step.input)?;
    let charge = json!({"amount": amount, "item": step.input.item, "hold_id": hold.hold_id});
    let charged = outbound::post(&req.ctx, "payments", "/charges", &charge).await?;
    Ok(Reply::json(json!({"charge_id": charged["id"], "amount": amount})))
}

/// `refund-card` (compensates `charge`): refunds the charge in full → `{"refund_id", "charge_id"}`.
pub async fn refund_card(req: Request) -> Result<Reply, Error> {
    let undo: Later = req.json()?;
    let charge: Charge = undo.output("charge")?;
    let refund = json!({"charge_id": charge.charge_id, "amount": charge.amount});
    let refunded = outbound::post(&req.ctx, "payments", "/refunds", &refund).await?;
    Ok(Reply::json(json!({"refund_id": refunded["id"], "charge_id": charge.charge_id})))
}

/// `create-shipment` (step `ship`, the last: nothing after it can fail, so it has no
/// compensation): stores `shipments/ship_{run_id}` → `{"shipment_id"}`. With `"fail_shipping":
/// true` in the run's input the carrier refuses the parcel: 422, not retried, and the run is
/// compensated.
pub async fn create_shipment(req: Request) -> Result<Reply, Error> {
    let step: Later = req.json()?;
    if step.input.fail_shipping {
        return Err(Error::permanent("the carrier refused the parcel: no delivery to this address"));
    }
    let hold: Hold = step.output("reserve")?;
    let charge: Charge = step.output("charge")?;
    let shipment_id = format!("ship_{}", run_id(&req.ctx));
    let shipment = json!({"hold_id": hold.hold_id, "charge_id": charge.charge_id, "item": step.input.item,
                          "quantity": step.input.quantity});
    Ok(Effects::new().result(json!({"shipment_id": shipment_id})).put("shipments", &shipment_id, shipment).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(item: &str, quantity: u64) -> Order {
        Order { item: item.into(), quantity, fail_shipping: false }
    }

    #[test]
    fn an_order_costs_its_items_and_only_known_items_in_sane_numbers_sell() {
        assert_eq!(price_of(&order("sword", 2)).unwrap(), 60);
        assert_eq!(price_of(&order("yacht", 1)).unwrap_err().status(), 422);
        assert_eq!(price_of(&order("potion", 0)).unwrap_err().status(), 422);
        assert_eq!(price_of(&order("potion", 11)).unwrap_err().status(), 422);
    }

    #[test]
    fn a_later_step_reads_the_run_input_and_earlier_outputs() {
        let body = json!({"input": {"item": "potion", "fail_shipping": true},
                          "steps": {"reserve": {"hold_id": "hold_01J", "item": "potion", "quantity": 1}},
                          "failed_step": "ship", "error": "refused"});
        let later: Later = serde_json::from_value(body).unwrap();
        assert_eq!((later.input.quantity, later.input.fail_shipping), (1, true), "quantity defaults to one");
        assert_eq!(later.output::<Hold>("reserve").unwrap().hold_id, "hold_01J");
        assert_eq!(later.output::<Charge>("charge").unwrap_err().status(), 400, "no such step output");
    }
}
