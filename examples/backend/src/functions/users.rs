//! Sign-up: `register-user` (sync) creates the user and announces it; three subscribers of
//! `user.registered` react — each with its own retries and dead-letter queue.

use keel_sdk::{Effects, Error, Event, Reply, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::outbound;

/// Credits a new user starts with.
pub const STARTING_BALANCE: u64 = 100;

#[derive(Debug, Deserialize)]
struct Signup {
    email: String,
    name: String,
}

/// A user, as stored under `users/{user_id}` and sent with `user.registered`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// `register-user`: `{"email", "name"}` → 201 `{"user_id", "email", "name", "balance"}`.
/// The user id is the normalised email; a second registration is refused with 409. The user
/// and the starting balance are written with `if_absent`, so two racing registrations cannot
/// both win: the loser's effects conflict, it is retried, and then sees the user.
pub async fn register_user(req: Request) -> Result<Reply, Error> {
    let signup: Signup = req.json()?;
    let email = signup.email.trim().to_lowercase();
    let name = signup.name.trim().to_owned();
    check_email(&email)?;
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::bad_request("name must be 1 to 100 characters"));
    }
    if req.ctx.kv_get::<User>("users", &email).await?.is_some() {
        return Err(Error::permanent(format!("{email} is already registered")).with_status(409));
    }
    let user = User { user_id: email.clone(), email, name };
    let result = json!({"user_id": user.user_id, "email": user.email, "name": user.name, "balance": STARTING_BALANCE});
    Ok(Effects::new()
        .status(201)
        .result(result)
        .put_if_absent("users", &user.user_id, &user)
        .put_if_absent("balances", &user.user_id, STARTING_BALANCE)
        .emit(Event::new("user.registered").subject(&user.user_id).data(&user))
        .into())
}

fn check_email(email: &str) -> Result<(), Error> {
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.contains('@')
        }
        None => false,
    };
    if !valid || email.len() > 254 {
        return Err(Error::bad_request(format!("{email:?} is not an email address like ada@example.com")));
    }
    Ok(())
}

/// `send-welcome-email` (on `user.registered`): asks the email provider, through Keel's egress
/// (`dependencies = ["email"]`), to send the welcome mail. The provider fails now and then; the
/// failure is retryable, so Keel retries the attempt with backoff, and the idempotency key Keel
/// forwards (`{invocation_id}/email/1`, the same for every attempt) keeps a retry from sending a
/// second mail.
pub async fn send_welcome_email(req: Request) -> Result<Reply, Error> {
    let user: User = req.json()?;
    let mail = json!({"to": user.email, "template": "welcome", "name": user.name});
    let sent = outbound::post(&req.ctx, "email", "/send", &mail).await?;
    Ok(Reply::json(json!({"message_id": sent["id"]})))
}

/// `count-signups` (on `user.registered`): increments `counters/signups` with `if_version`, so
/// concurrent deliveries never lose a count (a conflict is retried on the new version).
pub async fn count_signups(req: Request) -> Result<Reply, Error> {
    let current = req.ctx.kv_get::<u64>("counters", "signups").await?;
    let effects = match current {
        Some(count) => Effects::new().result(json!({"signups": count.value + 1})).put_if_version(
            "counters",
            "signups",
            count.value + 1,
            count.version,
        ),
        None => Effects::new().result(json!({"signups": 1})).put_if_absent("counters", "signups", 1),
    };
    Ok(effects.into())
}

/// `init-profile` (on `user.registered`): creates an empty profile, once.
pub async fn init_profile(req: Request) -> Result<Reply, Error> {
    let user: User = req.json()?;
    let profile = json!({"display_name": user.name, "bio": "", "avatar_url": null});
    Ok(Effects::new().result(&profile).put_if_absent("profiles", &user.user_id, &profile).into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(super::check_email("ada@example.com").is_ok());
        for bad in ["ada", "@example.com", "ada@example", "ada@.com", "a@b@c.com"] {
            assert_eq!(super::check_email(bad).unwrap_err().status(), 400, "{bad}");
        }
    }
}
