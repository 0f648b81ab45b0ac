//! The behaviour of each route the stand-in serves, with Mattermost's status codes and error
//! ids for the cases mmsub meets.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::records::{new_id, now, PostRec};
use crate::shapes;
use crate::store::{bad_param, fail, forbidden, not_found, Answer, Failure, Outcome, Req, Store};
use crate::MAX_PER_PAGE;

fn param<'a>(req: &'a Req<'_>, name: &str) -> &'a str {
    req.params.get(name).map(String::as_str).unwrap_or_default()
}

fn query_num(req: &Req<'_>, name: &str, default: usize) -> usize {
    req.query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body_str<'a>(req: &'a Req<'_>, name: &str) -> Result<&'a str, Failure> {
    req.body[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_param(name))
}

fn string_list(req: &Req<'_>) -> Result<Vec<String>, Failure> {
    req.body
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| bad_param("list"))
}

/// The route's behaviour. `caller` is checked here: every route but login needs a session.
pub fn handle(store: &mut Store, req: Req<'_>) -> Outcome {
    if req.template == "/api/v4/users/login" {
        return login(store, &req);
    }
    let Some(caller) = req.caller.map(str::to_owned) else {
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        ));
    };
    let admin = store.is_admin(&caller);
    let user_param = |req: &Req<'_>| -> String {
        match param(req, "user_id") {
            "me" => caller.clone(),
            id => id.to_owned(),
        }
    };
    match (req.method, req.template) {
        ("POST", "/api/v4/users/logout") => {
            store.sessions.retain(|_, u| *u != caller);
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("POST", "/api/v4/users") => {
            let username = body_str(&req, "username")?;
            let email = body_str(&req, "email")?;
            let password = body_str(&req, "password")?;
            let id = store.create_user(username, email, password, "system_user")?;
            Ok(Answer::created(shapes::user(
                store.user(&id).expect("just created"),
            )))
        }
        ("GET", "/api/v4/users") => {
            let per_page = query_num(&req, "per_page", 60).min(MAX_PER_PAGE);
            let page = query_num(&req, "page", 0);
            let users: Vec<Value> = store
                .users
                .iter()
                .skip(page * per_page)
                .take(per_page)
                .map(shapes::user)
                .collect();
            Ok(Answer::ok(json!(users)))
        }
        ("GET", "/api/v4/users/stats") => Ok(Answer::ok(shapes::users_stats(
            store.users.iter().filter(|u| u.delete_at == 0).count(),
        ))),
        ("POST", "/api/v4/users/ids") => {
            let ids = string_list(&req)?;
            let users: Vec<Value> = store
                .users
                .iter()
                .filter(|u| ids.contains(&u.id))
                .map(shapes::user)
                .collect();
            Ok(Answer::ok(json!(users)))
        }
        ("POST", "/api/v4/users/usernames") => {
            let names = string_list(&req)?;
            let users: Vec<Value> = store
                .users
                .iter()
                .filter(|u| names.contains(&u.username))
                .map(shapes::user)
                .collect();
            Ok(Answer::ok(json!(users)))
        }
        ("GET", "/api/v4/users/{user_id}") => store
            .user(&user_param(&req))
            .map(|u| Answer::ok(shapes::user(u)))
            .ok_or_else(|| not_found("user")),
        ("GET", "/api/v4/users/username/{username}") => store
            .user_by_name(param(&req, "username"))
            .map(|u| Answer::ok(shapes::user(u)))
            .ok_or_else(|| not_found("user")),
        ("DELETE", "/api/v4/users/{user_id}") => {
            let id = user_param(&req);
            if !admin && id != caller {
                return Err(forbidden());
            }
            store.user(&id).ok_or_else(|| not_found("user"))?;
            if req.query.get("permanent").is_some_and(|v| v == "true") {
                store.users.retain(|u| u.id != id);
                store.channel_members.retain(|(_, u)| *u != id);
                store.team_members.retain(|(_, u)| *u != id);
            } else if let Some(u) = store.users.iter_mut().find(|u| u.id == id) {
                u.delete_at = now();
            }
            store.sessions.retain(|_, u| *u != id);
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("PUT", "/api/v4/users/{user_id}/active") => {
            if !admin {
                return Err(forbidden());
            }
            let active = req.body["active"]
                .as_bool()
                .ok_or_else(|| bad_param("active"))?;
            let id = user_param(&req);
            let user = store
                .users
                .iter_mut()
                .find(|u| u.id == id)
                .ok_or_else(|| not_found("user"))?;
            user.delete_at = if active { 0 } else { now() };
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("GET", "/api/v4/users/{user_id}/teams") => {
            let id = user_param(&req);
            let teams: Vec<Value> = store
                .teams
                .iter()
                .filter(|t| {
                    t.delete_at == 0 && store.team_members.contains(&(t.id.clone(), id.clone()))
                })
                .map(shapes::team)
                .collect();
            Ok(Answer::ok(json!(teams)))
        }
        ("GET", "/api/v4/users/{user_id}/teams/{team_id}/channels") => {
            let id = user_param(&req);
            if id != caller && !admin {
                return Err(forbidden());
            }
            let team = param(&req, "team_id");
            let channels: Vec<Value> = store
                .channels
                .iter()
                .filter(|c| c.team_id == team && c.delete_at == 0 && store.is_member(&c.id, &id))
                .map(shapes::channel)
                .collect();
            Ok(Answer::ok(json!(channels)))
        }
        ("GET", "/api/v4/teams") => {
            let teams: Vec<Value> = store
                .teams
                .iter()
                .filter(|t| t.delete_at == 0)
                .map(shapes::team)
                .collect();
            Ok(Answer::ok(json!(teams)))
        }
        ("POST", "/api/v4/teams") => {
            let name = body_str(&req, "name")?;
            if store.teams.iter().any(|t| t.name == name) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "store.sql_team.save_team.existing.app_error",
                    "A team with that name already exists",
                ));
            }
            let id = store.create_team(name, &caller);
            Ok(Answer::created(shapes::team(store.team(&id)?)))
        }
        ("GET", "/api/v4/teams/{team_id}") => Ok(Answer::ok(shapes::team(
            store.team(param(&req, "team_id"))?,
        ))),
        ("DELETE", "/api/v4/teams/{team_id}") => {
            if !admin {
                return Err(forbidden());
            }
            let id = store.team(param(&req, "team_id"))?.id.clone();
            if req.query.get("permanent").is_some_and(|v| v == "true") {
                store.teams.retain(|t| t.id != id);
            } else if let Some(t) = store.teams.iter_mut().find(|t| t.id == id) {
                t.delete_at = now();
            }
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("GET", "/api/v4/teams/name/{name}") => store
            .teams
            .iter()
            .find(|t| t.name == param(&req, "name") && t.delete_at == 0)
            .map(|t| Answer::ok(shapes::team(t)))
            .ok_or_else(|| not_found("team")),
        ("POST", "/api/v4/teams/{team_id}/members") => {
            let team = store.team(param(&req, "team_id"))?.id.clone();
            let user = body_str(&req, "user_id")?.to_owned();
            if user != caller && !admin {
                return Err(forbidden());
            }
            store.user(&user).ok_or_else(|| not_found("user"))?;
            let events = store.join_team(&team, &user);
            let mut answer = Answer::created(shapes::team_member(&team, &user));
            answer.events = events;
            Ok(answer)
        }
        ("GET", "/api/v4/teams/{team_id}/channels") => {
            let team = param(&req, "team_id");
            let per_page = query_num(&req, "per_page", 60).min(MAX_PER_PAGE);
            let page = query_num(&req, "page", 0);
            let channels: Vec<Value> = store
                .channels
                .iter()
                .filter(|c| c.team_id == team && c.channel_type == "O" && c.delete_at == 0)
                .skip(page * per_page)
                .take(per_page)
                .map(shapes::channel)
                .collect();
            Ok(Answer::ok(json!(channels)))
        }
        ("GET", "/api/v4/teams/{team_id}/channels/name/{channel_name}") => store
            .channels
            .iter()
            .find(|c| {
                c.team_id == param(&req, "team_id")
                    && c.name == param(&req, "channel_name")
                    && c.delete_at == 0
            })
            .map(|c| Answer::ok(shapes::channel(c)))
            .ok_or_else(|| not_found("channel")),
        ("POST", "/api/v4/channels") => {
            let team = body_str(&req, "team_id")?.to_owned();
            let name = body_str(&req, "name")?.to_owned();
            store.team(&team)?;
            if !admin && !store.team_members.contains(&(team.clone(), caller.clone())) {
                return Err(forbidden());
            }
            if store
                .channels
                .iter()
                .any(|c| c.team_id == team && c.name == name)
            {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "store.sql_channel.save_channel.exists.app_error",
                    "A channel with that name already exists on the same team.",
                ));
            }
            let id = store.create_channel(&team, &name, &caller);
            if let Some(display) = req.body["display_name"].as_str() {
                if let Some(c) = store.channels.iter_mut().find(|c| c.id == id) {
                    display.clone_into(&mut c.display_name);
                }
            }
            Ok(Answer::created(shapes::channel(store.live_channel(&id)?)))
        }
        ("GET", "/api/v4/channels/{channel_id}") => {
            let channel = store.live_channel(param(&req, "channel_id"))?;
            if channel.channel_type != "O" && !admin && !store.is_member(&channel.id, &caller) {
                return Err(forbidden());
            }
            Ok(Answer::ok(shapes::channel(channel)))
        }
        ("DELETE", "/api/v4/channels/{channel_id}") => {
            let id = store.live_channel(param(&req, "channel_id"))?.id.clone();
            if !admin && !store.is_member(&id, &caller) {
                return Err(forbidden());
            }
            if let Some(c) = store.channels.iter_mut().find(|c| c.id == id) {
                c.delete_at = now();
            }
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("POST", "/api/v4/channels/{channel_id}/members") => {
            let channel = store.live_channel(param(&req, "channel_id"))?.id.clone();
            let user = body_str(&req, "user_id")?.to_owned();
            store.user(&user).ok_or_else(|| not_found("user"))?;
            if !admin && !store.is_member(&channel, &caller) && user != caller {
                return Err(forbidden());
            }
            store
                .channel_members
                .insert((channel.clone(), user.clone()));
            Ok(Answer::created(shapes::channel_member(&channel, &user)))
        }
        ("GET", "/api/v4/channels/{channel_id}/members/{user_id}") => {
            let channel = store.live_channel(param(&req, "channel_id"))?.id.clone();
            let user = user_param(&req);
            if store.is_member(&channel, &user) {
                Ok(Answer::ok(shapes::channel_member(&channel, &user)))
            } else {
                Err(not_found("channel member"))
            }
        }
        ("DELETE", "/api/v4/channels/{channel_id}/members/{user_id}") => {
            let channel = store.live_channel(param(&req, "channel_id"))?.id.clone();
            let user = user_param(&req);
            if user != caller && !admin {
                return Err(forbidden());
            }
            store.channel_members.remove(&(channel, user));
            Ok(Answer::ok(shapes::status_ok()))
        }
        ("GET", "/api/v4/channels/{channel_id}/posts") => {
            channel_posts(store, &req, &caller, admin)
        }
        ("POST", "/api/v4/posts") => {
            let channel = body_str(&req, "channel_id")?.to_owned();
            let message = req.body["message"].as_str().unwrap_or_default().to_owned();
            store.live_channel(&channel)?;
            if !store.is_member(&channel, &caller) {
                return Err(forbidden());
            }
            let (id, event) = store.create_post(&channel, &caller, &message, "");
            let post = store
                .posts
                .iter()
                .find(|p| p.id == id)
                .expect("just created");
            let mut answer = Answer::created(shapes::post(post));
            answer.events.push(event);
            Ok(answer)
        }
        ("GET", "/api/v4/posts/{post_id}") => {
            let post = store
                .posts
                .iter()
                .find(|p| p.id == param(&req, "post_id") && p.delete_at == 0)
                .ok_or_else(|| not_found("post"))?;
            if !admin && !store.is_member(&post.channel_id, &caller) {
                return Err(forbidden());
            }
            Ok(Answer::ok(shapes::post(post)))
        }
        _ => Err(not_found("route")),
    }
}

fn login(store: &mut Store, req: &Req<'_>) -> Outcome {
    let login_id = body_str(req, "login_id")?;
    let password = body_str(req, "password")?;
    let user = store
        .users
        .iter()
        .find(|u| {
            (u.username == login_id || u.email == login_id)
                && u.password == password
                && u.delete_at == 0
        })
        .ok_or_else(|| {
            fail(
                StatusCode::UNAUTHORIZED,
                "api.user.login.invalid_credentials_email_username",
                "Enter a valid email or username and/or password.",
            )
        })?;
    let body = shapes::user(user);
    let token = new_id();
    store.sessions.insert(token.clone(), user.id.clone());
    let mut answer = Answer::ok(body);
    answer.token = Some(token);
    Ok(answer)
}

/// `GET /channels/{id}/posts`: `since`, `after`, or `page`/`per_page` (capped at 200), with the
/// `PostList` cursors.
fn channel_posts(store: &Store, req: &Req<'_>, caller: &str, admin: bool) -> Outcome {
    let channel = store.live_channel(param(req, "channel_id"))?;
    if !admin && !store.is_member(&channel.id, caller) {
        return Err(forbidden());
    }
    let newest_first = store.channel_posts(&channel.id);
    let per_page = query_num(req, "per_page", 60).clamp(1, MAX_PER_PAGE);
    if let Some(since) = req.query.get("since").and_then(|v| v.parse::<i64>().ok()) {
        let posts: Vec<&PostRec> = newest_first
            .iter()
            .copied()
            .filter(|p| p.create_at >= since)
            .collect();
        return Ok(Answer::ok(shapes::post_list(&posts, "", "")));
    }
    if let Some(after) = req.query.get("after") {
        // Posts newer than `after`, the `per_page` closest to it.
        let Some(at) = newest_first.iter().position(|p| &p.id == after) else {
            return Ok(Answer::ok(shapes::post_list(&[], "", "")));
        };
        let newer = &newest_first[..at];
        let start = newer.len().saturating_sub(per_page);
        let page = &newer[start..];
        let next = if start > 0 {
            newer[start - 1].id.as_str()
        } else {
            ""
        };
        return Ok(Answer::ok(shapes::post_list(page, next, after)));
    }
    let page = query_num(req, "page", 0);
    let start = (page * per_page).min(newest_first.len());
    let end = (start + per_page).min(newest_first.len());
    let slice = &newest_first[start..end];
    let next = if start > 0 {
        newest_first[start - 1].id.as_str()
    } else {
        ""
    };
    let prev = newest_first.get(end).map_or("", |p| p.id.as_str());
    Ok(Answer::ok(shapes::post_list(slice, next, prev)))
}
