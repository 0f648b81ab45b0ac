//! `loadtest http`: the contract's HTTP operations under goose, with goose's HTML report.
//!
//! Each goose user registers its own account on start (`userCreate` + `tokenAuth`), creates a
//! channel (`channelCreate`), then loops over weighted transactions: `textMessageSend` (most
//! common, as in a chat), `getMessageList`, `channelList`, `userList` and `userGetToken`.
//! Everything after `--` is goose's own options (`--users`, `--run-time`, `--report-file`…).

use std::time::Duration;

use goose::config::GooseConfiguration;
use goose::prelude::*;
use gumdrop::Options;
use serde_json::{json, Value};

use crate::client::{run_id, PASSWORD};

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// goose options, e.g. `-- --users 20 --hatch-rate 10 --run-time 30s --report-file report.html`.
    #[arg(last = true)]
    pub goose: Vec<String>,
}

/// Per goose user: its account and channel.
pub(crate) struct Account {
    pub username: String,
    pub token: String,
    pub channel: String,
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    GooseAttack::initialize_with_config(configuration(&args.goose, &args.url)?)?
        .register_scenario(
            scenario!("chat")
                .register_transaction(
                    transaction!(sign_up)
                        .set_name("userCreate+tokenAuth+channelCreate")
                        .set_on_start(),
                )
                .register_transaction(
                    transaction!(send_message)
                        .set_name("textMessageSend")
                        .set_weight(8)?,
                )
                .register_transaction(
                    transaction!(message_list)
                        .set_name("getMessageList")
                        .set_weight(4)?,
                )
                .register_transaction(
                    transaction!(channel_list)
                        .set_name("channelList")
                        .set_weight(2)?,
                )
                .register_transaction(transaction!(user_list).set_name("userList").set_weight(1)?)
                .register_transaction(
                    transaction!(refresh_token)
                        .set_name("userGetToken")
                        .set_weight(1)?,
                ),
        )
        .execute()
        .await?;
    Ok(())
}

/// goose's options from `goose_args`, with this generator's defaults: `url` as the host, a
/// 30 s run and a 10 s request timeout unless told otherwise.
pub(crate) fn configuration(
    goose_args: &[String],
    url: &str,
) -> anyhow::Result<GooseConfiguration> {
    let mut configuration = GooseConfiguration::parse_args_default(goose_args)
        .map_err(|e| anyhow::anyhow!("goose options: {e}"))?;
    if configuration.host.is_empty() {
        url.trim_end_matches('/')
            .clone_into(&mut configuration.host);
    }
    if configuration.run_time.is_empty() && configuration.iterations == 0 {
        // Bounded by default: a forgotten --run-time must not load a server forever.
        configuration.run_time = "30s".into();
    }
    if configuration.timeout.is_none() {
        configuration.timeout = Some("10".into());
    }
    Ok(configuration)
}

/// Posts one GraphQL operation; a response with `errors` counts as a failed request.
pub(crate) async fn graphql(
    user: &mut GooseUser,
    name: &str,
    query: &str,
    variables: Value,
) -> Result<Value, Box<TransactionError>> {
    let mut builder = user
        .get_request_builder(&GooseMethod::Post, "/graphql/")?
        .timeout(Duration::from_secs(10))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(account) = user.get_session_data::<Account>() {
        builder = builder.header("Authorization", format!("JWT {}", account.token));
    }
    let request = GooseRequest::builder()
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let body = match goose.response {
        Ok(response) => response.json::<Value>().await.unwrap_or(Value::Null),
        Err(_) => return Ok(Value::Null),
    };
    if body.get("errors").is_some() || body.get("data").is_none() {
        let message = format!("GraphQL error: {body}");
        return user
            .set_failure(&message, &mut goose.request, None, None)
            .map(|()| Value::Null);
    }
    Ok(body["data"].clone())
}

async fn sign_up(user: &mut GooseUser) -> TransactionResult {
    let username = format!("gs{}u{}", run_id(), user.weighted_users_index);
    graphql(
        user,
        "userCreate",
        "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode } }",
        json!({ "u": username, "p": PASSWORD, "e": format!("{username}@loadtest.example") }),
    )
    .await?;
    let data = graphql(
        user,
        "tokenAuth",
        "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
        json!({ "u": username, "p": PASSWORD }),
    )
    .await?;
    let token = data["tokenAuth"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let channel = format!("{username}-room");
    user.set_session_data(Account {
        username: username.clone(),
        token,
        channel: channel.clone(),
    });
    graphql(
        user,
        "channelCreate",
        "mutation($n: String!) { channelCreate(channelName: $n, members: []) { statusCode } }",
        json!({ "n": channel }),
    )
    .await?;
    Ok(())
}

/// A field of the user's account (empty before sign-up finished).
fn account(user: &GooseUser, field: fn(&Account) -> &String) -> String {
    user.get_session_data::<Account>()
        .map(|a| field(a).clone())
        .unwrap_or_default()
}

async fn send_message(user: &mut GooseUser) -> TransactionResult {
    let channel = account(user, |a| &a.channel);
    graphql(
        user,
        "textMessageSend",
        "mutation($c: String!) { textMessageSend(channelIdentifier: $c, textMessage: \"hello from goose\") { statusCode } }",
        json!({ "c": channel }),
    )
    .await
    .map(drop)
}

async fn message_list(user: &mut GooseUser) -> TransactionResult {
    let channel = account(user, |a| &a.channel);
    graphql(
        user,
        "getMessageList",
        "query($c: String!) { getMessageList(channelIdentifier: $c, page: { pageSize: 20 }) { data { id message createAt owner { username } } hasNext } }",
        json!({ "c": channel }),
    )
    .await
    .map(drop)
}

async fn channel_list(user: &mut GooseUser) -> TransactionResult {
    graphql(
        user,
        "channelList",
        "query { channelList { data { channelId channelName lastMessage { message createAt } } hasNext } }",
        json!({}),
    )
    .await
    .map(drop)
}

async fn user_list(user: &mut GooseUser) -> TransactionResult {
    graphql(
        user,
        "userList",
        "query { userList(page: { pageSize: 20 }) { data { id username } pageCount count } }",
        json!({}),
    )
    .await
    .map(drop)
}

async fn refresh_token(user: &mut GooseUser) -> TransactionResult {
    let username = account(user, |a| &a.username);
    graphql(
        user,
        "userGetToken",
        "mutation($u: String!, $p: String!) { userGetToken(username: $u, password: $p) { ... on ResponseWithToken { statusCode token } ... on ResponseBase { statusCode message } } }",
        json!({ "u": username, "p": PASSWORD }),
    )
    .await
    .map(drop)
}
