//! The backend's functions, each served on its own by `keel-example fn NAME`.
//!
//! - `users`: `register-user` and the `user.registered` subscribers `count-signups`,
//!   `init-profile` and `send-welcome-email`.
//! - `purchase`: `purchase`; `sales`: `record-sales`, a batch function subscribed to
//!   `purchase.completed`.
//! - `checkout`: the steps of the `checkout` workflow (`reserve-stock`, `charge-card`,
//!   `create-shipment`) and their compensations (`release-stock`, `refund-card`).
//! - `ops`: `notify-ops`, subscribed to Keel's own events (`keel.system`): one alert line each.
//! - `outbound`: calls to the third-party providers, through Keel's egress.

pub mod checkout;
pub mod ops;
mod outbound;
pub mod purchase;
pub mod sales;
pub mod users;

/// Every function, by the name `keel.toml` gives it.
pub const NAMES: [&str; 12] = [
    "register-user",
    "purchase",
    "record-sales",
    "send-welcome-email",
    "count-signups",
    "init-profile",
    "notify-ops",
    "reserve-stock",
    "release-stock",
    "charge-card",
    "refund-card",
    "create-shipment",
];

/// Serves function `name` on `$PORT` until Keel stops the instance.
pub async fn serve(name: &str) -> anyhow::Result<()> {
    println!("{name}: serving on port {}", std::env::var("PORT").unwrap_or_else(|_| "8080".into()));
    match name {
        "register-user" => keel_sdk::serve(users::register_user).await?,
        "send-welcome-email" => keel_sdk::serve(users::send_welcome_email).await?,
        "count-signups" => keel_sdk::serve(users::count_signups).await?,
        "init-profile" => keel_sdk::serve(users::init_profile).await?,
        "purchase" => keel_sdk::serve(purchase::purchase).await?,
        "record-sales" => keel_sdk::serve_batch(sales::record_sales).await?,
        "notify-ops" => keel_sdk::serve(ops::notify_ops).await?,
        "reserve-stock" => keel_sdk::serve(checkout::reserve_stock).await?,
        "release-stock" => keel_sdk::serve(checkout::release_stock).await?,
        "charge-card" => keel_sdk::serve(checkout::charge_card).await?,
        "refund-card" => keel_sdk::serve(checkout::refund_card).await?,
        "create-shipment" => keel_sdk::serve(checkout::create_shipment).await?,
        other => anyhow::bail!("no function named {other:?}; expected one of {}", NAMES.join(", ")),
    }
    Ok(())
}
