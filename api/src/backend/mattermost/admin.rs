//! `MattermostAdminProxy`: what the server's own Mattermost account (a system admin) does on
//! top of everything a user can: accounts, team membership, channels.

use serde_json::json;

use super::model::{MmChannel, MmTeam, MmUser};
use super::proxy::MattermostUserProxy;
use super::rest::{Call, MattermostError, MmResult, RestClient};
use crate::backend::NewUser;

/// What the server's own Mattermost account (a system admin) does: accounts, teams, channels.
#[derive(Debug, Clone)]
pub struct MattermostAdminProxy {
    user: MattermostUserProxy,
}

impl std::ops::Deref for MattermostAdminProxy {
    type Target = MattermostUserProxy;
    fn deref(&self) -> &MattermostUserProxy {
        &self.user
    }
}

impl MattermostAdminProxy {
    /// Logs in with `MATTERMOST_ADMIN_LOGIN_ID` / `MATTERMOST_ADMIN_LOGIN_PASSWORD`.
    pub async fn login(api: RestClient, login_id: &str, password: &str) -> MmResult<Self> {
        Ok(Self {
            user: MattermostUserProxy::login(api, login_id, password).await?,
        })
    }

    /// Creates an account after the original's username, email and password checks.
    pub async fn create_user(&self, new: &NewUser) -> MmResult<MmUser> {
        for check in [
            crate::validation::password(&new.password),
            crate::validation::username(&new.username),
            crate::validation::email(&new.email),
        ] {
            check.map_err(|message| MattermostError::Api {
                id: "mmsub.invalid_user".into(),
                message,
                status_code: 400,
            })?;
        }
        self.session()
            .json(Call::post(
                "/users",
                json!({ "username": new.username, "email": new.email, "password": new.password }),
            ))
            .await
    }

    /// Deletes an account for good (Mattermost must allow API deletion).
    pub async fn remove_user(&self, identifier: &str) -> MmResult<()> {
        let user = self.user(identifier).await?;
        self.session()
            .ok(Call::delete(format!("/users/{}", user.id)).query("permanent", true))
            .await
    }

    /// Deactivates a user (by id or name).
    pub async fn deactivate_user(&self, identifier: &str) -> MmResult<()> {
        let user = self.user(identifier).await?;
        self.session()
            .ok(Call::delete(format!("/users/{}", user.id)))
            .await
    }

    /// Activates a deactivated user again.
    pub async fn activate_user(&self, identifier: &str) -> MmResult<()> {
        let user = self.user(identifier).await?;
        self.session()
            .ok(Call::put(
                format!("/users/{}/active", user.id),
                json!({ "active": true }),
            ))
            .await
    }

    /// Every team on the server.
    pub async fn list_all_teams(&self) -> MmResult<Vec<MmTeam>> {
        self.session().json(Call::get("/teams")).await
    }

    /// The team's open channels, without those lacking a display name (as the original).
    pub async fn list_all_public_channels(
        &self,
        team_identifier: &str,
    ) -> MmResult<Vec<MmChannel>> {
        let team = self.team(team_identifier).await?;
        let channels: Vec<MmChannel> = self
            .session()
            .json(Call::get(format!("/teams/{}/channels", team.id)))
            .await?;
        Ok(channels
            .into_iter()
            .filter(|c| !c.display_name.is_empty())
            .collect())
    }

    /// Adds a user to a channel (both by id or name).
    pub async fn add_user_to_channel(
        &self,
        channel_identifier: &str,
        user_identifier: &str,
        team_identifier: &str,
    ) -> MmResult<()> {
        let team = self.team(team_identifier).await?;
        let channel = self.channel(&team.id, channel_identifier).await?;
        let user = self.user(user_identifier).await?;
        self.add_user_id_to_channel(&channel.id, &user.id).await
    }

    /// `POST /channels/{id}/members` with ids already known.
    pub async fn add_user_id_to_channel(&self, channel_id: &str, user_id: &str) -> MmResult<()> {
        self.session()
            .ok(Call::post(
                format!("/channels/{channel_id}/members"),
                json!({ "user_id": user_id }),
            ))
            .await
    }

    /// Creates an open team; Mattermost makes its creator a member.
    pub async fn create_join_team(&self, team_name: &str) -> MmResult<MmTeam> {
        if team_name.is_empty()
            || !team_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(MattermostError::Api {
                id: "mmsub.invalid_team".into(),
                message: "Team name could not contains symbols or underscores.".into(),
                status_code: 400,
            });
        }
        self.session()
            .json(Call::post(
                "/teams",
                json!({ "name": team_name, "display_name": team_name, "type": "O" }),
            ))
            .await
    }

    /// Adds a user to a team (both by id or name).
    pub async fn add_user_to_team(
        &self,
        user_identifier: &str,
        team_identifier: &str,
    ) -> MmResult<()> {
        let team = self.team(team_identifier).await?;
        let user = self.user(user_identifier).await?;
        self.add_user_id_to_team(&team.id, &user.id).await
    }

    /// `POST /teams/{id}/members` with ids already known.
    pub async fn add_user_id_to_team(&self, team_id: &str, user_id: &str) -> MmResult<()> {
        self.session()
            .ok(Call::post(
                format!("/teams/{team_id}/members"),
                json!({ "team_id": team_id, "user_id": user_id }),
            ))
            .await
    }

    /// Deletes a team.
    pub async fn remove_team(&self, team_identifier: &str) -> MmResult<()> {
        let team = self.team(team_identifier).await?;
        self.session()
            .ok(Call::delete(format!("/teams/{}", team.id)).query("permanent", true))
            .await
    }

    /// Creates an open channel in the team; Mattermost makes its creator a member.
    pub async fn create_join_channel(
        &self,
        channel_name: &str,
        team_identifier: &str,
    ) -> MmResult<MmChannel> {
        let team = self.team(team_identifier).await?;
        self.session()
            .json(Call::post(
                "/channels",
                json!({ "team_id": team.id, "name": channel_name, "display_name": channel_name, "type": "O" }),
            ))
            .await
    }

    /// Deletes a channel of a team.
    pub async fn remove_channel(
        &self,
        channel_identifier: &str,
        team_identifier: &str,
    ) -> MmResult<()> {
        let team = self.team(team_identifier).await?;
        let channel = self.channel(&team.id, channel_identifier).await?;
        self.session()
            .ok(Call::delete(format!("/channels/{}", channel.id)))
            .await
    }
}
