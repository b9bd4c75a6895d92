//! Users: email users, service principals and Azure AD groups, each with role assignments.

use super::client::{Call, Client};
use super::error::Error;
use super::models::User;
use super::pager::{Accepts, ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the users (`Users_List`); `options` may set `max_page_size` only.
    pub fn list_users(&self, options: &ListOptions) -> Pager<User> {
        Pager::new(
            self,
            "Users_List",
            &["users"],
            options,
            Some(Accepts::PageSize),
        )
    }

    /// Gets one user (`Users_Get`).
    pub async fn get_user(&self, id: &str) -> Result<User, Error> {
        let op = "Users_Get";
        let url = self.url(op, &["users", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates (or replaces) a user (`Users_Create`).
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::models::{roles, RoleAssignment, User, UserKind};
    /// let user = User {
    ///     id: None,
    ///     kind: UserKind::Email { email: "ops@contoso.com".into() },
    ///     roles: vec![RoleAssignment { role: roles::OPERATOR.into(), organization: None }],
    /// };
    /// client.create_user("ops", &user).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_user(&self, id: &str, user: &User) -> Result<User, Error> {
        let op = "Users_Create";
        let url = self.url(op, &["users", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(user)?).await
    }

    /// Updates a user with a JSON merge patch (`Users_Update`).
    pub async fn update_user(&self, id: &str, patch: &serde_json::Value) -> Result<User, Error> {
        let op = "Users_Update";
        let url = self.url(op, &["users", id], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Deletes a user (`Users_Remove`).
    pub async fn delete_user(&self, id: &str) -> Result<(), Error> {
        let op = "Users_Remove";
        let url = self.url(op, &["users", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }
}
