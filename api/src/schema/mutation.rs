use async_graphql::{Context, ErrorExtensions, Object};
use http::StatusCode;
use serde_json::json;

use super::types::{
    status_text, user_metadata, GenericScalar, ObtainJsonWebToken, Refresh, ResponseBase,
    ResponseUnion, ResponseWithToken, Verify,
};
use super::{require_user, state};
use crate::auth::{IssuedToken, TokenError};
use crate::backend::{ChannelPost, NewUser};
use crate::client::ClientSlot;
use crate::request_id::RequestId;
use crate::throttle::RetryAfter;
use crate::validation;
use mmsub_metrics::labels::Limit;

/// The mutation root of the schema.
pub struct MutationRoot;

/// Publishes new posts, tagged with the request's id; the caller answers only after the bus
/// accepted them.
async fn publish(ctx: &Context<'_>, posts: &[ChannelPost]) -> Result<(), ResponseBase> {
    let app = state(ctx);
    let request_id = ctx.data_opt::<RequestId>().map(|id| id.0.clone());
    for post in posts {
        let event = post.to_event().with_request_id(request_id.clone());
        if let Err(e) = app.bus.publish(event).await {
            tracing::error!(error = %e, post = %post.post.id, request_id, "publishing a new message failed");
            return Err(ResponseBase::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Message stored, but live delivery is unavailable; try again.",
                None,
            ));
        }
    }
    Ok(())
}

/// A throttled attempt, as `ResponseBase`: 429, and when to retry in `metadata.retryAfter`.
fn throttled_answer(what: &str, retry: RetryAfter) -> ResponseBase {
    let secs = retry.secs();
    ResponseBase::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many {what}: retry in {secs} seconds."),
        Some(json!({ "retryAfter": secs })),
    )
}

/// A throttled `tokenAuth`: a GraphQL error saying when to retry, `extensions.retryAfter`.
fn throttled_error(retry: RetryAfter) -> async_graphql::Error {
    let secs = retry.secs();
    async_graphql::Error::new(format!("Too many login attempts: retry in {secs} seconds."))
        .extend_with(|_, e| {
            e.set("code", "TOO_MANY_REQUESTS");
            e.set("retryAfter", secs);
        })
}

/// A username as a log field and throttle key: bounded, so that neither grows with the input.
fn username_key(username: &str) -> String {
    username.chars().take(64).collect::<String>().to_lowercase()
}

/// Admits one login attempt of `username` from this client, before any password is hashed:
/// the client's and the username's buckets, and the client's share of the hashing pool (held
/// by the returned slot until the attempt ends).
fn admit_login(ctx: &Context<'_>, username: &str) -> Result<ClientSlot, RetryAfter> {
    let app = state(ctx);
    let client = super::client(ctx);
    let key = username_key(username);
    let throttled = |limit: Limit, retry: RetryAfter| {
        app.metrics.http.throttled(limit);
        tracing::warn!(%client, username = %key, retry_after_secs = retry.secs(), limit = limit.as_str(), "login throttled");
        retry
    };
    app.throttles
        .login_per_client
        .try_take(&client.0)
        .map_err(|retry| throttled(Limit::LoginPerClient, retry))?;
    app.throttles
        .login_per_user
        .try_take(&key)
        .map_err(|retry| throttled(Limit::LoginPerUser, retry))?;
    app.throttles
        .logins_in_flight
        .acquire(client)
        .ok_or(RetryAfter(std::time::Duration::from_secs(1)))
        .map_err(|retry| throttled(Limit::LoginsInFlight, retry))
}

fn log_failed_login(ctx: &Context<'_>, username: &str) {
    let client = super::client(ctx);
    tracing::warn!(%client, username = %username_key(username), "login failed: wrong username or password");
}

fn credentials_error() -> async_graphql::Error {
    async_graphql::Error::new("Please enter valid credentials")
}

fn token_error(e: TokenError) -> async_graphql::Error {
    async_graphql::Error::new(e.to_string())
}

fn refresh_answer(issued: IssuedToken, refresh_token: Option<String>) -> Refresh {
    Refresh {
        payload: GenericScalar(issued.payload),
        refresh_expires_in: issued.refresh_expires_in,
        token: issued.token,
        refresh_token,
    }
}

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates a user (Mattermost's username, email and password rules) in the team.
    async fn user_create(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
        email: String,
    ) -> Option<ResponseBase> {
        let app = state(ctx);
        let client = super::client(ctx);
        if let Err(retry) = app.throttles.signup_per_client.try_take(&client.0) {
            app.metrics.http.throttled(Limit::SignupPerClient);
            tracing::warn!(%client, "sign-up throttled");
            return Some(throttled_answer("sign-ups from your address", retry));
        }
        let checks = validation::username(&username)
            .and_then(|()| validation::email(&email))
            .and_then(|()| validation::password(&password));
        if let Err(message) = checks {
            return Some(ResponseBase::bad_request(message));
        }
        let created = match app
            .backend
            .create_user(NewUser {
                username,
                email,
                password,
            })
            .await
        {
            Ok(created) => created,
            Err(e) => return Some(e.into()),
        };
        // The account exists either way; a lost "joined" notice is logged, not an error.
        if publish(ctx, &created.announcements).await.is_err() {
            tracing::warn!(user = %created.user.username, "user created but its join post was not delivered live");
        }
        Some(ResponseBase::ok(
            "User created successfully!",
            user_metadata(&created.user),
        ))
    }

    /// A 30-minute access token and a single-use refresh token, or "Login Failed!" (404).
    async fn user_get_token(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Option<ResponseUnion> {
        let app = state(ctx);
        let _slot = match admit_login(ctx, &username) {
            Ok(slot) => slot,
            Err(retry) => {
                return Some(ResponseUnion::ResponseBase(throttled_answer(
                    "login attempts",
                    retry,
                )))
            }
        };
        let login = match app.backend.authenticate(&username, &password).await {
            Ok(Some(login)) => login,
            Ok(None) => {
                log_failed_login(ctx, &username);
                return Some(ResponseUnion::ResponseBase(ResponseBase::new(
                    StatusCode::NOT_FOUND,
                    "Login Failed!",
                    None,
                )));
            }
            Err(e) => return Some(ResponseUnion::ResponseBase(e.into())),
        };
        let refresh = match app
            .backend
            .issue_refresh_token(&login, app.settings.refresh_token_ttl)
            .await
        {
            Ok(token) => token,
            Err(e) => return Some(ResponseUnion::ResponseBase(e.into())),
        };
        let issued = app.jwt.issue(&login.actor(), None);
        Some(ResponseUnion::ResponseWithToken(ResponseWithToken {
            status: Some(status_text(StatusCode::OK)),
            status_code: Some(StatusCode::OK.as_u16().into()),
            message: Some("Login Successfully!".into()),
            token: Some(issued.token),
            refresh_token: Some(refresh),
            metadata: Some(GenericScalar(user_metadata(&login.user))),
        }))
    }

    /// django-graphql-jwt's `tokenAuth`.
    async fn token_auth(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> async_graphql::Result<Option<ObtainJsonWebToken>> {
        let app = state(ctx);
        let _slot = admit_login(ctx, &username).map_err(throttled_error)?;
        let login = app
            .backend
            .authenticate(&username, &password)
            .await
            .map_err(super::graphql_error)?
            .ok_or_else(|| {
                log_failed_login(ctx, &username);
                credentials_error()
            })?;
        let issued = app.jwt.issue(&login.actor(), None);
        Ok(Some(ObtainJsonWebToken {
            payload: GenericScalar(issued.payload),
            refresh_expires_in: issued.refresh_expires_in,
            token: issued.token,
        }))
    }

    /// django-graphql-jwt's `verifyToken`.
    async fn verify_token(
        &self,
        ctx: &Context<'_>,
        token: Option<String>,
    ) -> async_graphql::Result<Option<Verify>> {
        let token = token.ok_or_else(|| token_error(TokenError::Invalid))?;
        let verified = state(ctx).jwt.verify(&token).map_err(token_error)?;
        Ok(Some(Verify {
            payload: GenericScalar(verified.payload),
        }))
    }

    /// Exchanges a JWT (within 7 days of `origIat`) or a single-use refresh token from
    /// `userGetToken` for a new access token. A redeemed refresh token is replaced by a new one.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        token: Option<String>,
        refresh_token: Option<String>,
    ) -> async_graphql::Result<Option<Refresh>> {
        let app = state(ctx);
        let presented = refresh_token
            .or(token)
            .ok_or_else(|| token_error(TokenError::Invalid))?;
        if presented.matches('.').count() == 2 {
            return Ok(Some(refresh_answer(
                app.jwt.refresh(&presented).map_err(token_error)?,
                None,
            )));
        }
        let login = app
            .backend
            .redeem_refresh_token(&presented)
            .await
            .map_err(super::graphql_error)?
            .ok_or_else(|| async_graphql::Error::new("Invalid refresh token"))?;
        let replacement = app
            .backend
            .issue_refresh_token(&login, app.settings.refresh_token_ttl)
            .await
            .map_err(super::graphql_error)?;
        Ok(Some(refresh_answer(
            app.jwt.issue(&login.actor(), None),
            Some(replacement),
        )))
    }

    /// Posts as the caller and delivers the message to the channel's subscribers.
    async fn text_message_send(
        &self,
        ctx: &Context<'_>,
        channel_identifier: String,
        text_message: String,
    ) -> async_graphql::Result<Option<ResponseBase>> {
        let actor = require_user(ctx)?;
        let app = state(ctx);
        let max = app.settings.max_message_chars;
        if text_message.trim().is_empty() {
            return Ok(Some(ResponseBase::bad_request("Message is empty.")));
        }
        if text_message.chars().count() > max {
            return Ok(Some(ResponseBase::bad_request(format!(
                "Message is too long: at most {max} characters."
            ))));
        }
        if let Err(retry) = app.throttles.send_per_user.try_take(&actor.username) {
            app.metrics.http.throttled(Limit::SendPerUser);
            return Ok(Some(throttled_answer("messages", retry)));
        }
        let sent = match app
            .backend
            .send_message(actor, &channel_identifier, &text_message)
            .await
        {
            Ok(sent) => sent,
            Err(e) => return Ok(Some(e.into())),
        };
        if let Err(answer) = publish(ctx, std::slice::from_ref(&sent)).await {
            return Ok(Some(answer));
        }
        Ok(Some(ResponseBase::ok(
            "Message send successfully!",
            json!({ "message_id": sent.post.id }),
        )))
    }

    /// Creates an open channel with the caller and `members` (usernames) in it.
    async fn channel_create(
        &self,
        ctx: &Context<'_>,
        channel_name: String,
        members: Vec<Option<String>>,
    ) -> async_graphql::Result<Option<ResponseBase>> {
        let actor = require_user(ctx)?;
        let app = state(ctx);
        if let Err(message) = validation::channel_name(&channel_name) {
            return Ok(Some(ResponseBase::bad_request(message)));
        }
        let max = app.settings.max_channel_members;
        if members.len() > max {
            return Ok(Some(ResponseBase::bad_request(format!(
                "Too many members: a channel is created with at most {max} (MMSUB_MAX_CHANNEL_MEMBERS)."
            ))));
        }
        let members: Vec<String> = members.into_iter().flatten().collect();
        Ok(Some(
            match app
                .backend
                .create_channel(actor, &channel_name, &members)
                .await
            {
                Ok(channel) => ResponseBase::ok(
                    "Channel created successfully!",
                    json!({ "channel_id": channel.id }),
                ),
                Err(e) => e.into(),
            },
        ))
    }
}
